"""``tf.train.Example`` records and TFRecord files, written without importing TensorFlow.

The converter's worker processes only need to serialize protos and frame them: importing
TensorFlow there would cost seconds and hundreds of MB per process for nothing. The message
classes are built from a descriptor equivalent to ``tensorflow/core/example/{feature,example}.proto``
in a private descriptor pool (so they never clash with TensorFlow's own classes in a process that
imported it), and serialized by the protobuf runtime. Framing follows TFRecord's format: for each
record ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
little-endian (google-crc32c computes the CRC in C).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _example_classes():
    """``(Example, Features, Feature)`` message classes from a descriptor matching TensorFlow's."""
    fdp = descriptor_pb2.FileDescriptorProto(name="maskrcnn_example.proto", package="tensorflow", syntax="proto3")

    def message(name: str, *fields: tuple) -> descriptor_pb2.DescriptorProto:
        msg = fdp.message_type.add(name=name)
        for field_name, number, label, typ, type_name in fields:
            f = msg.field.add(name=field_name, number=number, label=label, type=typ)
            if type_name:
                f.type_name = type_name
        return msg

    repeated, optional = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, repeated, _F.TYPE_BYTES, ""))
    message("FloatList", ("value", 1, repeated, _F.TYPE_FLOAT, ""))   # proto3: packed, as TF's [packed = true]
    message("Int64List", ("value", 1, repeated, _F.TYPE_INT64, ""))
    feature = message(
        "Feature",
        ("bytes_list", 1, optional, _F.TYPE_MESSAGE, ".tensorflow.BytesList"),
        ("float_list", 2, optional, _F.TYPE_MESSAGE, ".tensorflow.FloatList"),
        ("int64_list", 3, optional, _F.TYPE_MESSAGE, ".tensorflow.Int64List"),
    )
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    features = message("Features", ("feature", 1, repeated, _F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, label=optional, type=_F.TYPE_STRING)
    entry.field.add(name="value", number=2, label=optional, type=_F.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    entry.options.map_entry = True
    message("Example", ("features", 1, optional, _F.TYPE_MESSAGE, ".tensorflow.Features"))

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{n}"))
                 for n in ("Example", "Features", "Feature"))


Example, Features, Feature = _example_classes()


def bytes_list(values: Sequence[bytes]) -> tuple[str, Sequence[bytes]]:
    return "bytes_list", values


def int64_list(values: Sequence[int]) -> tuple[str, Sequence[int]]:
    return "int64_list", values


def float_list(values: Sequence[float]) -> tuple[str, Sequence[float]]:
    return "float_list", values


def encode_example(features: Mapping[str, tuple[str, Sequence]]) -> bytes:
    """Serialize ``{key: bytes_list([...]) | int64_list([...]) | float_list([...])}`` as a ``tf.train.Example``.

    Lists may be empty (an image without objects keeps its object keys). Map keys are serialized
    sorted, so equal inputs give equal bytes.
    """
    example = Example()
    feature_map = example.features.feature
    for key, (kind, values) in features.items():
        getattr(feature_map[key], kind).SetInParent()      # an empty list still records its kind
        getattr(feature_map[key], kind).value.extend(values)
    return example.SerializeToString(deterministic=True)


def decode_example(data: bytes) -> dict[str, list]:
    """``{key: [values]}`` of a serialized Example (tests and tools; the pipeline uses tf.io)."""
    example = Example.FromString(data)
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[key] = list(getattr(feature, kind).value) if kind else []
    return out


# ----------------------------------------------------------------------------- framing


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record in TFRecord framing."""
    header = struct.pack("<Q", len(record))
    return header + struct.pack("<I", _masked_crc(header)) + record + struct.pack("<I", _masked_crc(record))


class TFRecordWriter:
    """Writes ``path`` through ``path + ".part"``: the final name appears only when complete.

    Counts records and computes the file's SHA-256 while writing (no second read).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.part_path = self.path.with_name(self.path.name + ".part")
        self._file = open(self.part_path, "wb")
        self._sha256 = hashlib.sha256()
        self.records = 0
        self.bytes = 0

    def write(self, record: bytes) -> None:
        data = frame(record)
        self._file.write(data)
        self._sha256.update(data)
        self.records += 1
        self.bytes += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def commit(self) -> None:
        """Flush, fsync and rename to the final name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.part_path, self.path)

    def abort(self) -> None:
        self._file.close()
        self.part_path.unlink(missing_ok=True)

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def read_records(path: str | os.PathLike, *, verify: bool = True) -> Iterator[bytes]:
    """The records of a TFRecord file; raises ValueError on a bad length or CRC."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated record header")
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if verify and _masked_crc(header[:8]) != length_crc:
                raise ValueError(f"{path}: corrupt record length")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path}: truncated record")
            if verify and _masked_crc(data) != struct.unpack("<I", footer)[0]:
                raise ValueError(f"{path}: corrupt record data")
            yield data
