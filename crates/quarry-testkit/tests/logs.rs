//! The log guard fails a test on an undeclared WARN/ERROR event, and on a declared
//! `expect` that never appeared; declared events pass.

use quarry_testkit::log_guard;

#[test]
#[should_panic(expected = "undeclared WARN/ERROR")]
fn an_undeclared_warning_fails_the_test() {
    let logs = log_guard();
    tracing::warn!(disk = "sda", "something the test did not declare");
    drop(logs);
}

#[test]
#[should_panic(expected = "undeclared WARN/ERROR")]
fn an_undeclared_error_from_another_thread_fails_the_test() {
    let logs = log_guard();
    std::thread::spawn(|| tracing::error!("from a daemon thread")).join().unwrap();
    logs.finish();
}

#[test]
#[should_panic(expected = "none appeared")]
fn an_expected_line_that_never_came_fails_the_test() {
    let logs = log_guard();
    logs.expect("the OSD noticed");
    drop(logs);
}

#[test]
fn declared_lines_pass_and_info_is_never_counted() {
    let logs = log_guard();
    logs.expect("peer went away").allow("maybe slow");
    tracing::info!("not a warning");
    tracing::warn!(peer = 3, "peer went away");
    tracing::error!("peer went away again");
    let lines = logs.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].text.contains("peer=3"), "fields are matched too: {lines:?}");
    logs.finish();
}

#[tokio::test]
#[should_panic(expected = "undeclared WARN/ERROR")]
async fn a_cluster_fails_on_undeclared_warnings_at_shutdown() {
    let cluster =
        quarry_testkit::Cluster::builder().osds(1).pools(vec![("rbd", 4, 1)]).start().await;
    tracing::warn!("a daemon complained");
    cluster.shutdown().await;
}
