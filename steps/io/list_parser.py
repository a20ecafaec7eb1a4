"""ListObjectsV2 replies parsed in C: the client-side floor of listing 10^8 keys.

botocore parses every reply by walking the service model in Python: ~50 ms of CPU for a
1,000-key page even with timestamps left unparsed, so 10^5 pages cost over an hour of one core
before any planning (bench/scale.py). This parser reads a ListObjectsV2 body with ElementTree
(C) into the same dict botocore returns (``Contents`` with Key, Size, LastModified as sent, ETag,
StorageClass; ``CommonPrefixes``; the scalar fields), ~10x faster; every other reply, errors
included, goes through botocore's own parser. botocore's handlers still run on the result, e.g.
the one that decodes ``EncodingType=url`` keys.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from botocore.parsers import ResponseParserFactory, RestXMLParser

_INTEGERS = frozenset({"MaxKeys", "KeyCount"})
_TEXTS = frozenset(
    {"Name", "Prefix", "Delimiter", "EncodingType", "ContinuationToken", "NextContinuationToken", "StartAfter"}
)
_OBJECT_FIELDS = ("Key", "LastModified", "ETag", "StorageClass")


def parse_list_objects_v2(body: bytes) -> dict[str, Any]:
    """A ListObjectsV2 result body as botocore's parsed dict (timestamps as the strings sent)."""
    root = ET.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    parsed: dict[str, Any] = {}
    contents, prefixes = [], []
    for element in root:
        name = element.tag[len(ns) :]
        if name == "Contents":
            item = {field: element.findtext(ns + field) for field in _OBJECT_FIELDS}
            item = {field: value for field, value in item.items() if value is not None}
            size = element.findtext(ns + "Size")
            if size is not None:
                item["Size"] = int(size)
            contents.append(item)
        elif name == "CommonPrefixes":
            prefixes.append({"Prefix": element.findtext(ns + "Prefix") or ""})
        elif name == "IsTruncated":
            parsed[name] = (element.text or "").strip() == "true"
        elif name in _INTEGERS:
            parsed[name] = int(element.text or 0)
        elif name in _TEXTS:
            parsed[name] = element.text or ""
    if contents:
        parsed["Contents"] = contents
    if prefixes:
        parsed["CommonPrefixes"] = prefixes
    return parsed


class FastListParser(RestXMLParser):
    """botocore's rest-xml parser, but ListObjectsV2 results through ``parse_list_objects_v2``."""

    def _do_parse(self, response: dict, shape: Any) -> dict:
        if shape is not None and shape.name == "ListObjectsV2Output":
            # The request id and host id from the headers, as botocore's own parse keeps them.
            return {
                "ResponseMetadata": self._populate_response_metadata(response),
                **parse_list_objects_v2(response["body"]),
            }
        return super()._do_parse(response, shape)


class FastListParserFactory(ResponseParserFactory):
    """Gives S3 (rest-xml) clients ``FastListParser``; timestamps stay the strings S3 sent
    (nothing here reads them, and dateutil parsing was ~80% of botocore's cost of a page)."""

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "rest-xml":
            return FastListParser(timestamp_parser=str)
        return super().create_parser(protocol_name)
