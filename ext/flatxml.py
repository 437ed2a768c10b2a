"""WeChat Pay API v2's flat XML: <xml><field>value</field>...</xml>, nothing nested.

No DTD is ever legitimate here, and refusing one up front closes the XXE and entity-expansion
class of attacks (WeChat's own 2018 SDK advisory) whatever the XML library does.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ext.errors import NotificationInvalid

_DTD_RE = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_flat_xml(data: bytes, root_tag: str) -> dict[str, str]:
    """Child tag -> text of a one-level XML document whose root is `root_tag`."""
    if _DTD_RE.search(data):
        raise NotificationInvalid("XML with a DTD or entity declaration is refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise NotificationInvalid(f"body is not XML: {exc}") from exc
    if root.tag != root_tag:
        raise NotificationInvalid(f"XML root is <{root.tag}>, expected <{root_tag}>")
    fields: dict[str, str] = {}
    for child in root:
        if len(child) or child.tag in fields:
            raise NotificationInvalid(f"XML field <{child.tag}> is nested or repeated")
        fields[child.tag] = child.text or ""
    return fields


def cdata_xml(fields: dict[str, str]) -> bytes:
    """<xml> with each value in CDATA, as WeChat's answers are written."""
    parts = []
    for tag, value in fields.items():
        if "]]>" in value:
            raise ValueError("a CDATA value cannot contain ']]>'")
        parts.append(f"<{tag}><![CDATA[{value}]]></{tag}>")
    return ("<xml>" + "".join(parts) + "</xml>").encode()
