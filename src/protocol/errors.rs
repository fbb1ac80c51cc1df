//! nsqd's protocol errors: each code and text defined once, with its fatality.
//!
//! Only `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED` leave the connection open; every
//! other error is followed by a close, exactly as nsqd does.

use std::fmt;

/// An error frame to send to the client: `<code> <description>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The `E_*` code, e.g. `E_INVALID`.
    pub code: &'static str,
    /// The text after the code: bytes, since nsqd echoes client bytes (an unknown command's
    /// name, an unparsable number, a message ID) verbatim, valid UTF-8 or not.
    pub text: Vec<u8>,
    /// Whether nsqd closes the connection after sending it.
    pub fatal: bool,
}

impl ProtocolError {
    /// A fatal error: the frame is sent, then the connection is closed.
    pub fn fatal(code: &'static str, text: impl Into<Vec<u8>>) -> Self {
        ProtocolError {
            code,
            text: text.into(),
            fatal: true,
        }
    }

    /// A non-fatal error: the frame is sent and the connection stays open.
    pub fn non_fatal(code: &'static str, text: impl Into<Vec<u8>>) -> Self {
        ProtocolError {
            code,
            text: text.into(),
            fatal: false,
        }
    }

    /// `E_INVALID <text>`, fatal.
    pub fn invalid(text: impl Into<Vec<u8>>) -> Self {
        Self::fatal(E_INVALID, text)
    }

    /// The bytes of the error frame's data: code, one space, description.
    pub fn frame_data(&self) -> Vec<u8> {
        [self.code.as_bytes(), b" ", &self.text].concat()
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, String::from_utf8_lossy(&self.text))
    }
}

/// State, arity, integer parsing, ranges, IDs, unknown commands.
pub const E_INVALID: &str = "E_INVALID";
/// Topic names.
pub const E_BAD_TOPIC: &str = "E_BAD_TOPIC";
/// Channel names.
pub const E_BAD_CHANNEL: &str = "E_BAD_CHANNEL";
/// IDENTIFY/AUTH bodies, MPUB outer size and count.
pub const E_BAD_BODY: &str = "E_BAD_BODY";
/// PUB/DPUB bodies and each MPUB message.
pub const E_BAD_MESSAGE: &str = "E_BAD_MESSAGE";
/// Runtime failure of a PUB.
pub const E_PUB_FAILED: &str = "E_PUB_FAILED";
/// Runtime failure of an MPUB.
pub const E_MPUB_FAILED: &str = "E_MPUB_FAILED";
/// Runtime failure of a DPUB.
pub const E_DPUB_FAILED: &str = "E_DPUB_FAILED";
/// FIN of a message not in flight for this client (non-fatal).
pub const E_FIN_FAILED: &str = "E_FIN_FAILED";
/// REQ of a message not in flight for this client (non-fatal).
pub const E_REQ_FAILED: &str = "E_REQ_FAILED";
/// TOUCH of a message not in flight for this client (non-fatal).
pub const E_TOUCH_FAILED: &str = "E_TOUCH_FAILED";
/// SUB could not add the client to the channel.
pub const E_SUB_FAILED: &str = "E_SUB_FAILED";
/// IDENTIFY negotiation failure.
pub const E_IDENTIFY_FAILED: &str = "E_IDENTIFY_FAILED";
/// AUTH sent while no auth server is configured.
pub const E_AUTH_DISABLED: &str = "E_AUTH_DISABLED";
/// The auth server could not be asked, or gave an invalid reply (the reason is only logged).
pub const E_AUTH_FAILED: &str = "E_AUTH_FAILED";
/// The auth server granted nothing, or nothing for this topic and channel.
pub const E_UNAUTHORIZED: &str = "E_UNAUTHORIZED";
/// SUB/PUB/MPUB/DPUB before AUTH while auth is enabled.
pub const E_AUTH_FIRST: &str = "E_AUTH_FIRST";
/// The 4-byte magic was not `  V2`.
pub const E_BAD_PROTOCOL: &str = "E_BAD_PROTOCOL";
