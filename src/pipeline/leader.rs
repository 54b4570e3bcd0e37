//! The pipeline as a leader's processing stage: [`PipelineSetup`] starts a [`Pipeline`] each time
//! a cluster member becomes leader (the node sees only the [`crate::service`] seam).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::alerts::{FanoutAlertSink, LogAlertSink, SinkAlertSink};
use super::{Pipeline, PipelineConfig, StartOptions};
use crate::event::{Event, Priority, StoredEvent};
use crate::rt::Disk;
use crate::service::{Admission, Processing, ProcessingContext, ServiceError, StartProcessing};

/// How a member runs the event pipeline when it leads.
#[derive(Debug, Clone)]
pub struct PipelineSetup {
    pub config: PipelineConfig,
    /// Where the dead-letter queue lives (each member has its own; entries are local to the node
    /// that dead-lettered them).
    pub dlq_disk: Arc<dyn Disk>,
}

impl StartProcessing for PipelineSetup {
    fn start(&self, ctx: ProcessingContext) -> Result<Arc<dyn Processing>, String> {
        // Alerts go to the log and, as events, to the `_alerts` topic through the member.
        let alerts = FanoutAlertSink(vec![Arc::new(LogAlertSink), Arc::new(SinkAlertSink(ctx.publisher))]);
        let opts = StartOptions {
            checkpoint: ctx.checkpoint,
            alerts: Arc::new(alerts),
            ..StartOptions::for_config(&self.config)
        };
        let mut config = self.config.clone();
        if let Some((topics, default)) = ctx.routes {
            config.topics = topics;
            config.default_priority = default;
        }
        let pipeline =
            Pipeline::start(config, ctx.clock, self.dlq_disk.clone(), opts).map_err(|e| e.to_string())?;
        Ok(Arc::new(pipeline))
    }
}

impl Processing for Pipeline {
    fn try_admit(&self, events: &[Event]) -> Result<Option<Admission>, ServiceError> {
        Ok(Pipeline::try_admit(self, events)?.map(Admission::new))
    }

    fn admit<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Admission, ServiceError>> {
        Box::pin(async move { Pipeline::admit(self, events).await.map(Admission::new) })
    }

    fn submit_admitted(&self, events: Vec<StoredEvent>, admission: Admission) {
        match admission.downcast::<super::Admission>() {
            Ok(adm) => Pipeline::submit_admitted(self, events, adm),
            Err(other) => {
                debug_assert!(false, "an admission from another stage: {other:?}");
                Pipeline::submit(self, events);
            }
        }
    }

    fn submit(&self, events: Vec<StoredEvent>) {
        Pipeline::submit(self, events);
    }

    fn reload_routes(&self, topics: &BTreeMap<String, Priority>, default: Priority) {
        Pipeline::reload_routes(self, topics, default);
    }

    fn render_metrics(&self) -> String {
        self.render_prometheus()
    }

    fn abort(&self) -> usize {
        Pipeline::abort(self)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(Pipeline::shutdown(self))
    }
}
