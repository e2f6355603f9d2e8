"""The secure-collab wire protocol: message framing (``messages``) and signed releases (``release``)."""

from secure_collab.protocol.messages import (
    PROTOCOL_VERSION,
    Limits,
    Message,
    MsgType,
    ProtocolError,
    Sequencer,
    sha256_hex,
)

__all__ = ["PROTOCOL_VERSION", "Limits", "Message", "MsgType", "ProtocolError", "Sequencer", "sha256_hex"]
