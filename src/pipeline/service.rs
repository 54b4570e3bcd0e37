//! `PipelinedService`: any [`EventService`] with the pipeline in front (admission) and behind
//! (processing of what was stored), so the single-node server runs the pipeline today.

use std::future::Future;
use std::sync::Arc;

use crate::event::{Event, StoredEvent};
use crate::service::{Appended, EventService, FetchReply, ServiceError};

use super::Pipeline;

/// Admits each publish, stores it through the inner service, then submits the newly stored
/// events (not duplicates) to the pipeline.
///
/// Ordering: a publish admitted at once is placed in the log when `publish` is called, as the
/// trait promises; one that must wait for transactional room is placed when it is admitted.
/// The commit timestamp given to the pipeline is this node's wall clock at the inner call (for
/// `LocalNode` the very stamp it stores); the cluster node submits its own
/// [`StoredEvent`]s after commit instead.
#[derive(Debug)]
pub struct PipelinedService<S> {
    inner: Arc<S>,
    pipeline: Pipeline,
}

impl<S> Clone for PipelinedService<S> {
    fn clone(&self) -> Self {
        PipelinedService { inner: self.inner.clone(), pipeline: self.pipeline.clone() }
    }
}

impl<S: EventService> PipelinedService<S> {
    pub fn new(inner: Arc<S>, pipeline: Pipeline) -> Self {
        PipelinedService { inner, pipeline }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }
}

fn stored(events: Vec<Event>, appended: &[Appended], stamp_ms: u64) -> Vec<StoredEvent> {
    events
        .into_iter()
        .zip(appended)
        .filter(|(_, a)| !a.duplicate)
        .map(|(event, a)| StoredEvent { offset: a.offset, timestamp_ms: stamp_ms, event })
        .collect()
}

impl<S: EventService> EventService for PipelinedService<S> {
    fn publish(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<S> {
        let pipeline = self.pipeline.clone();
        let inner = self.inner.clone();
        let early = match pipeline.try_admit(&events) {
            Err(e) => Err(e),
            Ok(Some(admission)) => {
                let stamp = pipeline.clock().wall_unix_ms();
                Ok(Some((admission, stamp, inner.publish(events.clone()))))
            }
            Ok(None) => Ok(None),
        };
        async move {
            let (admission, stamp, appended) = match early? {
                Some((admission, stamp, fut)) => (admission, stamp, fut.await?),
                None => {
                    let admission = pipeline.admit(&events).await?;
                    let stamp = pipeline.clock().wall_unix_ms();
                    let appended = inner.publish(events.clone()).await?;
                    (admission, stamp, appended)
                }
            };
            pipeline.submit_admitted(stored(events, &appended, stamp), admission);
            Ok(appended)
        }
    }

    fn fetch(
        &self,
        topic: String,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<S> {
        self.inner.fetch(topic, offset, max)
    }

    fn node_id(&self) -> u64 {
        self.inner.node_id()
    }
}
