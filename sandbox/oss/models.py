"""Data shapes of the OSS emulation that cross a boundary: the in-process API (``OssService.bucket_info``,
``object_info``, ...) used by other sandbox parts such as the CSI mount controller and the pod runtime."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BucketInfo(BaseModel):
    name: str
    created: float = Field(description="Unix time of creation")
    acl: str = "private"
    storage_class: str = "Standard"
    location: str = Field(description="oss-<region>, as OSS prints it")


class ObjectInfo(BaseModel):
    bucket: str
    key: str
    size: int
    etag: str = Field(description="Upper-case hex MD5 (simple put) or '<hex>-<parts>' (multipart), unquoted")
    crc64: int = Field(description="CRC-64/ECMA of the whole object, as in x-oss-hash-crc64ecma")
    content_type: str = "application/octet-stream"
    last_modified: float
    object_type: str = Field("Normal", description="Normal or Multipart (x-oss-object-type)")
    meta: dict[str, str] = Field(
        default_factory=dict, description="x-oss-meta-* and standard content headers"
    )


class UploadInfo(BaseModel):
    upload_id: str
    bucket: str
    key: str
    initiated: float
    content_type: str = "application/octet-stream"
    meta: dict[str, str] = Field(default_factory=dict)


class PartInfo(BaseModel):
    part_number: int
    size: int
    etag: str
    crc64: int
    last_modified: float
