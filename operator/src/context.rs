//! What every reconciliation shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use promscale_crds::MetricPolicy;

use crate::config::Config;
use crate::metrics::Metrics;

pub const FIELD_MANAGER: &str = "promscale-operator";

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    /// Asks the policy controller to look at a MetricPolicy again (after another policy of
    /// the same stack changed what it claims).
    pub policy_trigger: UnboundedSender<ObjectRef<MetricPolicy>>,
    /// Consecutive failed reconciliations per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        policy_trigger: UnboundedSender<ObjectRef<MetricPolicy>>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: (!config.leader_election_identity.is_empty()).then(|| config.leader_election_identity.clone()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            policy_trigger,
            failures: Mutex::default(),
        }
    }

    /// The delay before retrying `key` after one more failure: 2s, 4s, 8s, ... up to 5 minutes.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(2u64.saturating_pow((*count).min(9))).min(Duration::from_secs(300))
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("not poisoned").remove(key);
    }

    /// Publishes an Event about `object`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, object: &K, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish an Event");
        }
    }
}
