//! The scheduled purge: expired rows go on their own, and what went is
//! counted in `wiresocket_purged_total{kind}`.

use crate::helpers::*;
use std::time::Duration;

#[tokio::test]
async fn expired_sessions_are_purged_on_schedule_and_counted() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.purge_interval = Duration::from_secs(1);
    let app = spawn_with(config).await;
    let owner = app.setup().await;
    let hash = auth::token::hash_token(&owner.session);
    assert!(app.state.store.get_session(&hash).await.unwrap().is_some());
    // Past the session's 12 h: the next scheduled purge removes its row.
    app.clock.advance(time::Duration::hours(13));
    let mut gone = false;
    for _ in 0..100 {
        if app.state.store.get_session(&hash).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the expired session was not purged within 5 s");
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wiresocket_purged_total{kind=\"sessions\"}"), "no purge metric");
    // A purge with nothing left to do reports nothing.
    let report = server::app::purge_once(&app.state).await.unwrap();
    assert_eq!(report.sessions, 0);
}
