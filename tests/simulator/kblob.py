"""Bing's image upload for vision, `POST /images/kblob` (A1.1), as the ChatHub dialect's simulator.

The multipart body carries a `knowledgeRequest` JSON part and an `imageBase64` part; the
answer is `{"blobId", "processedBlobId"}`, and the chat message then names the image as
`imageUrl` = `https://www.bing.com/images/blob?bcid=<blobId>`. Uploads are recorded in the
same `attachments` book as Copilot's (`/_sim/attachments`), keyed by that URL, so the
ChatHub answer can say what it "saw".
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hashlib
import json
import secrets
from typing import Any

from websockets.http11 import Request, Response

from tests.simulator.accounts import account_of
from tests.simulator.copilot_state import REVOKED
from tests.simulator.http_util import cookies, json_response
from tests.simulator.state import SimulatorState

PATH = "/images/kblob"
BLOB_URL = "https://www.bing.com/images/blob?bcid={blob_id}"


def _parts(content_type: str, body: bytes) -> dict[str, bytes]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return {}
    found: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if name:
            found[str(name)] = payload if isinstance(payload, bytes) else b""
    return found


def upload(state: SimulatorState, request: Request, body: bytes) -> Response:
    """Record one kblob upload and answer with its blob id; 401 without a usable `_U`."""
    jar = cookies(request.headers)
    if not jar.get("_U") or jar.get("_U") == REVOKED:
        return json_response(401, {"error": "unauthorized"})
    parts = _parts(request.headers.get("Content-Type", ""), body)
    try:
        knowledge = json.loads(parts.get("knowledgeRequest", b"null"))
        image = base64.b64decode(parts.get("imageBase64", b""), validate=True)
    except (ValueError, binascii.Error):
        knowledge, image = None, b""
    if not isinstance(knowledge, dict) or "knowledgeRequest" not in knowledge or not image:
        state.violation(
            "chathub: POST /images/kblob without a knowledgeRequest part and an imageBase64 image"
        )
        return json_response(400, {"error": "knowledgeRequest and imageBase64 parts are required"})
    blob_id = secrets.token_hex(16)
    url = BLOB_URL.format(blob_id=blob_id)
    state.attachments[url] = {
        "url": url,
        "bytes": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
        "contentType": "image/*",
        "account": account_of(jar),
        "used": 0,
    }
    return json_response(200, {"blobId": blob_id, "processedBlobId": blob_id})


def seen(state: SimulatorState, message: dict[str, Any]) -> str:
    """What the model says about `message.imageUrl`: one sentence, or nothing without an image."""
    url = message.get("imageUrl")
    if not url:
        return ""
    record = state.attachments.get(str(url))
    if record is None:
        state.violation(f"chathub: message.imageUrl was never uploaded: {url!s:.80}")
        return "I see no image. "
    record["used"] += 1
    return f"I see an image ({record['bytes']} bytes). "
