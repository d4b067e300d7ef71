//! A connection's standing: whether its receipts may still go out.
//!
//! Receipts in STOMP are read in order: a RECEIPT for a frame says every frame before it was
//! handled. So once a frame of a connection was not taken, no later receipt may go out on it:
//! a COMMIT's or DISCONNECT's receipt would say the frame that was not taken was kept.

/// Whether a connection's frames are all taken so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Standing {
    /// Every frame so far was taken: receipts may go out.
    #[default]
    Good,
    /// The drain dropped one of its SENDs (see [`super::drain`]): its frames are still
    /// handled, but no receipt may follow.
    SendDropped,
    /// A frame was refused with an ERROR, which ends the session: its transactions are
    /// aborted and its later frames (already on their way) are ignored, so a COMMIT sent
    /// after a refused SEND cannot apply the rest of its transaction.
    Refused,
}

impl Standing {
    /// Whether a receipt may go out now.
    pub(super) fn receipts(self) -> bool {
        self == Standing::Good
    }
}
