//! lockd's destination calls (`ctl destinations`, `ctl purge`, `ctl delete`), answered by the
//! broker core ([`crate::broker::Request::Destinations`]).
//!
//! Each answer waits in a [`crate::control::Deferred`] task, bounded by [`ANSWER_TIMEOUT`], so a
//! purge of a deep queue delays only its own answer, and lockd hears why when there is none.

use crate::broker::Request as BrokerRequest;
use crate::schedules::ANSWER_TIMEOUT;
use shared_proto::control::FromBroker;
use shared_proto::destinations::DestinationCall;
use tokio::sync::{mpsc, oneshot};

/// The answer to a destination call `id` that came while the broker was still opening its store.
pub fn not_started(id: u64) -> FromBroker {
    FromBroker::CallFailed {
        id,
        message: "the broker is still opening its store: retry shortly".into(),
    }
}

/// The answer to `Destinations { id, call }`.
pub async fn answer(
    broker: &mpsc::Sender<BrokerRequest>,
    id: u64,
    call: DestinationCall,
) -> FromBroker {
    let (reply, answer) = oneshot::channel();
    let failed = |message: &str| FromBroker::CallFailed {
        id,
        message: message.into(),
    };
    if broker
        .send(BrokerRequest::Destinations { call, reply })
        .await
        .is_err()
    {
        return failed("the broker core has stopped; lockd restarts the broker or hands over");
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(answer)) => FromBroker::Destinations { id, answer },
        Ok(Err(_)) => failed(
            "the broker could not finish the call (reading its store failed: see brokerd's log)",
        ),
        Err(_) => failed(&format!(
            "the broker did not answer within {} s; a purge of a deep queue goes on in the \
             background: see `ctl destinations`",
            ANSWER_TIMEOUT.as_secs()
        )),
    }
}
