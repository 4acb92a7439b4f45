"""Examples and TFRecord files written without TensorFlow must read back with TensorFlow."""

from __future__ import annotations

import pytest
import tensorflow as tf

from maskrcnn.data.tfrecord import (TFRecordWriter, bytes_list, decode_example, encode_example, float_list,
                                    int64_list, read_records)

FEATURES = {
    "image/encoded": bytes_list([b"\xff\xd8" + bytes(range(256)) * 10]),
    "image/height": int64_list([480]),
    "image/object/bbox/xmin": float_list([0.25, 0.5]),
    "image/object/is_crowd": int64_list([0, 1]),
    "image/object/mask": bytes_list([b"a", b"bc"]),
    "image/object/area": float_list([]),
}


def test_example_reads_back_with_tensorflow():
    example = tf.train.Example.FromString(encode_example(FEATURES))
    feature = example.features.feature
    assert feature["image/height"].int64_list.value == [480]
    assert list(feature["image/object/bbox/xmin"].float_list.value) == [0.25, 0.5]
    assert list(feature["image/object/mask"].bytes_list.value) == [b"a", b"bc"]
    assert feature["image/object/area"].WhichOneof("kind") == "float_list"     # empty, but typed
    assert decode_example(encode_example(FEATURES))["image/object/is_crowd"] == [0, 1]


def test_encoding_is_independent_of_key_order():
    reordered = dict(reversed(list(FEATURES.items())))
    assert encode_example(reordered) == encode_example(FEATURES)


def test_framing_reads_back_with_tensorflow_and_is_verified(tmp_path):
    path = tmp_path / "x.tfrecord"
    records = [encode_example(FEATURES), b"", b"second"]
    with TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    assert not writer.part_path.exists() and writer.records == 3
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    assert list(read_records(path)) == records

    damaged = bytearray(path.read_bytes())
    damaged[20] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="corrupt"):
        list(read_records(path))


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "y.tfrecord"
    with pytest.raises(RuntimeError):
        with TFRecordWriter(path) as writer:
            writer.write(b"partial")
            raise RuntimeError("worker died")
    assert not path.exists() and not writer.part_path.exists()
