//! What the agent tells the rest of the program: the [`AgentEvent`]s it emits as it works
//! and the [`PassOutcome`] of each pass over a camera (plain data), and [`Events`], the
//! channel the parts send them on.

/// What the agent reports as it works, for metrics, notifications and the service
/// manager. Subscribe with [`Agent::subscribe`](super::Agent::subscribe); a slow
/// subscriber misses events, it never slows the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    CameraAppeared {
        camera: String,
        imei: String,
    },
    CameraGone {
        camera: String,
        imei: String,
    },
    /// A pass over a camera ended.
    PassFinished {
        camera: String,
        outcome: PassOutcome,
    },
    Downloaded {
        imei: String,
        clip: String,
        bytes: u64,
        secs: f64,
    },
    /// Uploaded (or found already there) and verified in the destination.
    Offloaded {
        imei: String,
        device_name: String,
        clip: String,
        key: String,
        event_code: String,
        size: u64,
        sha256: String,
        /// Bytes actually sent (0 when the object was already there).
        sent: u64,
        secs: f64,
    },
    Failed {
        imei: String,
        clip: String,
        stage: &'static str,
        error: String,
    },
    Lost {
        imei: String,
        clip: String,
    },
    DeletedFromCamera {
        imei: String,
        clip: String,
    },
}

/// How one camera's pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// Not reachable.
    Away,
    /// Reachable; `remaining` clips still need work (0 = fully processed).
    Done { imei: String, remaining: usize },
    /// Reachable but the pass failed (bad listing, camera lost mid-pass, ...).
    Failed { imei: Option<String>, error: String },
}

/// Where the parts send their [`AgentEvent`]s: one broadcast channel, cloned into every part
/// that reports. Sending never blocks, and no subscriber is fine.
#[derive(Debug, Clone)]
pub(crate) struct Events(tokio::sync::broadcast::Sender<AgentEvent>);

impl Events {
    pub(crate) fn new() -> Events {
        Events(tokio::sync::broadcast::channel(1024).0)
    }

    pub(crate) fn emit(&self, e: AgentEvent) {
        let _ = self.0.send(e);
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AgentEvent> {
        self.0.subscribe()
    }
}
