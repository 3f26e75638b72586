//! WAN scenarios: a camera polled at its URL over a metered cellular link, against the
//! simulator and an S3 server on 127.0.0.1, in-process. After a camera's first full
//! listing, a poll lists only the window since the newest clip known; these scenarios
//! count what that costs at the simulator, and check that a window never loses track of
//! a clip.

mod common;

use common::fleet::{Fleet, IMEI, Knobs, clip_path};
use common::s3::Store;
use common::wan::{
    DEVICE_INFO, LISTING, assert_offloaded, bytes_of, listing_windows, recorded_ago,
    requests_since, write_clip,
};
use qucam_offload::agent::PassOutcome;
use qucam_offload::commands::collect_status;
use qucam_offload::commands::status::CameraStatus;
use qucam_sim::TimeFilter;

/// Parameters in the query string, so that the simulator's log shows each listing's
/// `time_type`.
fn knobs() -> Knobs {
    Knobs {
        camera: "params = \"query\"".into(),
        ..Knobs::default()
    }
}

/// The same, clips left on the camera after their offload.
fn keeping() -> Knobs {
    Knobs {
        retention: "delete_from_camera = \"never\"".into(),
        ..knobs()
    }
}

async fn status(f: &Fleet) -> CameraStatus {
    let store = qucam_offload::store::Store::open(&f.db_path()).expect("state database");
    let mut st = collect_status(&store).await.expect("status");
    assert_eq!(st.len(), 1);
    st.remove(0)
}

fn done(out: PassOutcome) {
    assert!(
        matches!(&out, PassOutcome::Done { imei, .. } if imei == IMEI),
        "{out:?}"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_idle_poll_is_two_small_requests_and_a_new_clip_is_found_by_the_window
);
async fn an_idle_poll_is_two_small_requests_and_a_new_clip_is_found_by_the_window(store: Store) {
    let f = Fleet::start_on(store, 0, 0).await;
    // Two event clips and 40 loop recordings over the last hours (not selected).
    let (crash, sos) = (recorded_ago(180, "04"), recorded_ago(60, "0A"));
    write_clip(&f, &crash, 30_000);
    write_clip(&f, &sos, 30_000);
    for m in 0..40 {
        write_clip(&f, &recorded_ago(40 + 5 * m, "00"), 1_000);
    }
    // The first poll lists everything, offloads the event clips and deletes them.
    done(f.run_once(&knobs()).await);
    assert_offloaded(&f, &crash, 30_000);
    assert_offloaded(&f, &sos, 30_000);
    assert!(
        listing_windows(&f.sim.requests())
            .iter()
            .all(String::is_empty)
    );
    // Idle polls: the probe and one listing of the window, nothing else.
    for _ in 0..2 {
        let before = f.sim.requests().len();
        done(f.run_once(&knobs()).await);
        let idle = requests_since(&f.sim, before);
        let paths: Vec<&str> = idle.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, [DEVICE_INFO, LISTING], "an idle poll: {idle:#?}");
        let windows = listing_windows(&idle);
        assert!(!windows[0].is_empty(), "the listing is a window");
        // Request lines and reply bodies (headers not counted).
        let bytes = bytes_of(&idle);
        eprintln!(
            "idle poll: {} requests, {bytes} bytes (request lines and reply bodies)",
            idle.len()
        );
        assert!(bytes < 1_500, "an idle poll moved {bytes} bytes");
    }
    // A new event clip: the window lists it, and it is offloaded and deleted.
    let panic = recorded_ago(5, "09");
    write_clip(&f, &panic, 20_000);
    let before = f.sim.requests().len();
    done(f.run_once(&knobs()).await);
    let pass = requests_since(&f.sim, before);
    assert!(!listing_windows(&pass)[0].is_empty(), "found by a window");
    assert_offloaded(&f, &panic, 20_000);
    assert!(!f.clip_on_camera(&panic), "deleted after its offload");
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_window_that_misses_a_clip_makes_the_camera_fall_back_to_full_listings
);
async fn a_window_that_misses_a_clip_makes_the_camera_fall_back_to_full_listings(store: Store) {
    let f = Fleet::start_on(store, 0, 0).await;
    let (a, b) = (recorded_ago(60, "04"), recorded_ago(30, "0A"));
    write_clip(&f, &a, 10_000);
    write_clip(&f, &b, 10_000);
    done(f.run_once(&keeping()).await);
    assert_offloaded(&f, &a, 10_000);
    // The camera reads the window three hours late: the clips recorded in it are left out.
    f.sim
        .set_faults(|x| x.time_filter = TimeFilter::Skewed { hours: 3 });
    let before = f.sim.requests().len();
    done(f.run_once(&keeping()).await);
    let windows = listing_windows(&requests_since(&f.sim, before));
    assert!(!windows[0].is_empty(), "the poll tried a window first");
    assert!(
        windows[1..].iter().any(String::is_empty),
        "then listed in full: {windows:?}"
    );
    let st = status(&f).await;
    let note = st.listing_window.clone().unwrap_or_default();
    assert!(note.contains("LISTED IN FULL"), "{note:?}");
    assert_eq!(st.lost, 0, "a clip a window missed is not lost");
    assert_eq!(f.states()[&a], "retained");
    // From now on every poll lists in full.
    let before = f.sim.requests().len();
    done(f.run_once(&keeping()).await);
    let windows = listing_windows(&requests_since(&f.sim, before));
    assert!(windows.iter().all(String::is_empty), "{windows:?}");
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    lost_clips_are_counted_the_same_under_windowed_listings
);
async fn lost_clips_are_counted_the_same_under_windowed_listings(store: Store) {
    let f = Fleet::start_on(store, 0, 0).await;
    let (old, recent, newest) = (
        recorded_ago(600, "04"),
        recorded_ago(60, "0A"),
        recorded_ago(20, "09"),
    );
    for n in [&old, &recent, &newest] {
        write_clip(&f, n, 10_000);
    }
    // Downloads fail: nothing is offloaded yet.
    f.sim
        .set_faults(|x| x.download_override = Some((500, b"<html>boom</html>".to_vec())));
    done(f.run_once(&knobs()).await);
    // The camera overwrites its oldest clip, outside the next window.
    std::fs::remove_file(clip_path(&f.camera_dir, &old)).unwrap();
    let before = f.sim.requests().len();
    done(f.run_once(&knobs()).await);
    let windows = listing_windows(&requests_since(&f.sim, before));
    assert!(
        windows.iter().all(|w| !w.is_empty()),
        "windows only: {windows:?}"
    );
    assert_ne!(
        f.states()[&old],
        "lost",
        "a clip missing from a window it was not in is not lost"
    );
    // Then one inside the window: the window misses it, and the full listing that follows
    // settles both, as a full listing always did.
    std::fs::remove_file(clip_path(&f.camera_dir, &recent)).unwrap();
    done(f.run_once(&knobs()).await);
    let states = f.states();
    assert_eq!((&*states[&old], &*states[&recent]), ("lost", "lost"));
    let st = status(&f).await;
    assert_eq!(st.lost, 2);
    assert_eq!(
        st.listing_window, None,
        "clips that left the camera are no fault of the window"
    );
    assert_ne!(states[&newest], "lost");
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_full_relisting_catches_a_clip_the_windows_missed
);
async fn the_full_relisting_catches_a_clip_the_windows_missed(store: Store) {
    let f = Fleet::start_on(store, 0, 0).await;
    let first = recorded_ago(30, "04");
    write_clip(&f, &first, 10_000);
    done(f.run_once(&knobs()).await);
    // A straggler recorded long before the newest clip known (a camera whose clock went
    // back, a clip copied in late): outside every window.
    let straggler = recorded_ago(8 * 60, "0A");
    write_clip(&f, &straggler, 10_000);
    done(f.run_once(&knobs()).await);
    assert!(!f.states().contains_key(&straggler), "no window lists it");
    // `sync.full_listing_every` later, the full listing finds it.
    assert_eq!(f.db().make_full_listing_due(), 1);
    let before = f.sim.requests().len();
    done(f.run_once(&knobs()).await);
    let windows = listing_windows(&requests_since(&f.sim, before));
    assert!(windows[0].is_empty(), "a full listing: {windows:?}");
    assert_offloaded(&f, &straggler, 10_000);
}
