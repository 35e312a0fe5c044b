"""XML in and out: a tiny builder for response documents and a guarded parser for request bodies.

Responses are ``<?xml version="1.0" encoding="UTF-8"?>`` documents as OSS sends them. Request bodies (complete
multipart upload, delete multiple objects, create bucket configuration) are parsed with the standard library's
expat-based ElementTree after a size cap; anything that does not parse becomes ``MalformedXML``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .errors import OssError

MAX_XML_BODY = 8 * 1024 * 1024


class Element:
    """``Element("ListBucketResult").child("Name", "b")`` - children keep insertion order, as OSS's documents do."""

    def __init__(self, tag: str, _el: ET.Element | None = None) -> None:
        self.el = _el if _el is not None else ET.Element(tag)

    def child(self, tag: str, text: object | None = None) -> Element:
        sub = ET.SubElement(self.el, tag)
        if text is not None:
            sub.text = str(text)
        return Element(tag, sub)


def to_bytes(root: Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root.el, encoding="unicode").encode(
        "utf-8"
    )


def parse(body: bytes, root_tag: str) -> ET.Element:
    """Parse a request document whose root must be ``root_tag`` (else MalformedXML)."""
    if not body or len(body) > MAX_XML_BODY:
        raise OssError("MalformedXML")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise OssError("MalformedXML") from exc
    if root.tag != root_tag:
        raise OssError("MalformedXML")
    return root


def text(el: ET.Element, path: str) -> str | None:
    node = el.find(path)
    if node is None:
        return None
    return node.text or ""
