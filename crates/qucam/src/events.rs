//! The event codes a camera writes into clip names: the one table of codes, their names
//! (as the vendor document spells them) and the order in which clips are worth offloading.
//!
//! `00` is a loop recording; every other code is an event. [`EVENT_CODES`] lists the event
//! codes (without `00`), derived from [`EVENTS`].

/// One event code of the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The code as it appears in a clip name, e.g. `"04"` (upper-case hex).
    pub code: &'static str,
    /// The vendor's name for it, e.g. `"Crash Detection"`.
    pub name: &'static str,
    /// Offload priority: lower goes first.
    pub priority: i64,
}

const fn ev(code: &'static str, name: &'static str, priority: i64) -> Event {
    Event {
        code,
        name,
        priority,
    }
}

/// Every known code: `00` (loop recording) first, then the events in code order.
/// Crash, SOS and panic lead the offload order; loop recordings come last.
pub const EVENTS: [Event; 13] = [
    ev("00", "Loop Recording", 10),
    ev("01", "Ignition ON", 8),
    ev("02", "Ignition OFF", 8),
    ev("03", "Power Disconnected", 3),
    ev("04", "Crash Detection", 0),
    ev("05", "Harsh Acceleration", 4),
    ev("06", "Harsh Braking", 4),
    ev("07", "Harsh Turning", 4),
    ev("08", "Over Speed Alarm", 5),
    ev("09", "Panic Event", 2),
    ev("0A", "SoS Alarm", 1),
    ev("0E", "Geo_Peo_Fence", 7),
    ev("0F", "Parking Safeguard", 6),
];

/// The event codes (every known code but `00`), as they appear in clip names.
pub const EVENT_CODES: [&str; EVENTS.len() - 1] = {
    let mut out = [""; EVENTS.len() - 1];
    let mut i = 0;
    while i < out.len() {
        out[i] = EVENTS[i + 1].code;
        i += 1;
    }
    out
};

/// Name of a code not in [`EVENTS`].
pub const UNKNOWN_EVENT_NAME: &str = "Unknown Event";

/// Priority of a code not in [`EVENTS`]: after every event, before loop recordings.
pub const UNKNOWN_EVENT_PRIORITY: i64 = 9;

/// The table entry of a code, if it is known (codes are upper-case, as in
/// [`ClipName::event_code`](crate::ClipName::event_code)).
pub fn event(code: &str) -> Option<&'static Event> {
    EVENTS.iter().find(|e| e.code == code)
}

/// Human name of an event code.
///
/// ```
/// assert_eq!(qucam::event_name("04"), "Crash Detection");
/// assert_eq!(qucam::event_name("7F"), "Unknown Event");
/// ```
pub fn event_name(code: &str) -> &'static str {
    event(code).map_or(UNKNOWN_EVENT_NAME, |e| e.name)
}

/// Offload priority of an event: lower goes first. Crash, SOS and panic lead; loop
/// recordings come last, after unknown codes.
pub fn event_priority(code: &str) -> i64 {
    event(code).map_or(UNKNOWN_EVENT_PRIORITY, |e| e.priority)
}

/// Whether an event is one an operator wants to hear about at once (crash, SOS, panic).
///
/// ```
/// assert!(qucam::is_severe("0A"));
/// assert!(!qucam::is_severe("08"));
/// ```
pub fn is_severe(code: &str) -> bool {
    event_priority(code) <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severe_first() {
        assert!(event_priority("04") < event_priority("06"));
        assert!(event_priority("06") < event_priority("00"));
        assert!(event_priority("7F") < event_priority("00"));
        assert!(is_severe("0A") && !is_severe("08"));
        let severe: Vec<&str> = EVENTS
            .iter()
            .filter(|e| is_severe(e.code))
            .map(|e| e.code)
            .collect();
        assert_eq!(severe, ["04", "09", "0A"]);
    }

    #[test]
    fn event_codes_are_the_table_without_loop_recordings() {
        assert_eq!(EVENTS[0].code, "00");
        assert_eq!(
            EVENT_CODES,
            [
                "01", "02", "03", "04", "05", "06", "07", "08", "09", "0A", "0E", "0F"
            ]
        );
        for code in EVENT_CODES {
            assert_ne!(event_name(code), UNKNOWN_EVENT_NAME, "{code}");
        }
        assert_eq!(event_name("0A"), "SoS Alarm");
    }
}
