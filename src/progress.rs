//! Progress for `run --once` and `demo`, driven by the agent's [`AgentEvent`]s.
//!
//! On a terminal (stderr is a TTY): one bar per camera seen in this run, counting the
//! clips verified in this run of those selected (verified in this run + still pending),
//! with their bytes; events trigger a refresh from the store, which is the truth. Log lines
//! are printed above the bars through [`log_writer`] (the `tracing` writer, from
//! `tracing-indicatif`), so bars and logs do not garble each other. Elsewhere (systemd, a
//! pipe, CI): no bars, just a summary log line per camera when its pass ends; the agent's
//! own log lines say the rest.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::LazyLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_indicatif::writer::{IndicatifWriter, Stderr};

use crate::agent::{Agent, AgentEvent, PassOutcome};
use crate::store::{Store, now};

/// Every bar of this process is drawn here (hidden when stderr is not a terminal).
static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// The `tracing` writer: stderr, with the progress bars suspended while a log line is
/// printed above them (`tracing-indicatif`), so bars and logs do not garble each other.
pub fn log_writer() -> IndicatifWriter<Stderr> {
    IndicatifWriter::new(BARS.clone())
}

#[derive(Default)]
struct Cam {
    name: String,
    bar: Option<ProgressBar>,
    offloaded: u64,
    bytes: u64,
    pending: u64,
}

/// The running progress display.
pub struct Progress {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts showing the progress of `agent` (call before it runs).
pub fn start(agent: &Agent) -> Progress {
    let tty = std::io::stderr().is_terminal();
    let stop = CancellationToken::new();
    let task = tokio::spawn(show(
        agent.subscribe(),
        agent.store().clone(),
        tty,
        stop.clone(),
    ));
    Progress { stop, task }
}

impl Progress {
    /// Draws the bars one last time (after the last events are counted) and stops.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// What is on screen: a bar per camera seen in this run (on a terminal), and the counts.
struct Screen {
    started: i64,
    mp: Option<MultiProgress>,
    /// Every bar made, in the order shown: dropped in that order at the end, so the
    /// finished bars stay on screen and later log lines no longer redraw them.
    made: Vec<ProgressBar>,
    style: ProgressStyle,
    cams: HashMap<String, Cam>,
}

impl Screen {
    fn new(tty: bool) -> Screen {
        let style =
            ProgressStyle::with_template("{prefix:<14!} {bar:30} {pos:>4}/{len:<4} clips {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        Screen {
            started: now(),
            mp: tty.then(|| BARS.clone()),
            made: Vec::new(),
            style,
            cams: HashMap::new(),
        }
    }

    /// Cameras seen in this run, with their pending and verified clips from the store.
    async fn refresh(&mut self, store: &Store) {
        let Ok(rows) = store.cameras().await else {
            return;
        };
        for row in rows.into_iter().filter(|r| r.last_seen >= self.started) {
            // Pending and verified from one query, so the bar never runs backwards.
            let Ok(t) = store.tally(&row.imei, self.started).await else {
                continue;
            };
            let cam = self.cams.entry(row.imei.clone()).or_default();
            (cam.pending, cam.offloaded, cam.bytes) = (t.pending, t.verified, t.verified_bytes);
            cam.name = row.config_name.unwrap_or_else(|| row.imei.clone());
            if let (Some(mp), None) = (&self.mp, &cam.bar) {
                let bar = mp.add(ProgressBar::new(0));
                bar.set_style(self.style.clone());
                bar.set_prefix(cam.name.clone());
                self.made.push(bar.clone());
                cam.bar = Some(bar);
            }
        }
    }

    /// A pass ended: its bar is finished with the outcome, or (no terminal) a log line.
    fn pass_finished(&self, camera: &str, outcome: &PassOutcome) {
        let imei = match outcome {
            PassOutcome::Done { imei, .. } => Some(imei),
            PassOutcome::Failed { imei, .. } => imei.as_ref(),
            PassOutcome::Away => None,
        };
        let note = match outcome {
            PassOutcome::Away => "not reachable".to_string(),
            PassOutcome::Done { remaining: 0, .. } => "done".to_string(),
            PassOutcome::Done { remaining, .. } => format!("{remaining} left"),
            PassOutcome::Failed { error, .. } => format!("failed: {error}"),
        };
        let Some(cam) = imei.and_then(|i| self.cams.get(i)) else {
            return;
        };
        match &cam.bar {
            Some(bar) => {
                bar.set_length(cam.offloaded + cam.pending);
                bar.set_position(cam.offloaded);
                bar.finish_with_message(format!("{:.1} MB, {note}", cam.bytes as f64 / 1e6));
            }
            None => info!(
                camera = %camera,
                "progress: {} of {} selected clips offloaded this run ({:.1} MB), {note}",
                cam.offloaded,
                cam.offloaded + cam.pending,
                cam.bytes as f64 / 1e6
            ),
        }
    }

    /// Redraws the bars still running.
    fn redraw(&self) {
        for cam in self.cams.values() {
            if let Some(bar) = &cam.bar
                && !bar.is_finished()
            {
                bar.set_length(cam.offloaded + cam.pending);
                bar.set_position(cam.offloaded);
                bar.set_message(format!("{:.1} MB", cam.bytes as f64 / 1e6));
            }
        }
    }

    /// Drops the bars' last handles in the order shown (see `made`).
    fn close(self) {
        drop(self.cams);
        drop(self.made);
    }
}

async fn show(
    mut rx: broadcast::Receiver<AgentEvent>,
    store: Store,
    tty: bool,
    stop: CancellationToken,
) {
    let mut screen = Screen::new(tty);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let event = tokio::select! {
            biased;
            r = rx.recv() => match r {
                Ok(e) => Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => None,
            _ = stop.cancelled() => break,
        };
        // Without bars the store is only needed for the summary at the end of a pass.
        if tty || matches!(event, Some(AgentEvent::PassFinished { .. })) {
            screen.refresh(&store).await;
        }
        match &event {
            Some(AgentEvent::PassFinished { camera, outcome }) => {
                screen.pass_finished(camera, outcome)
            }
            _ => screen.redraw(),
        }
    }
    screen.close();
}
