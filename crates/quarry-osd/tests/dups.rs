//! Request ids at the OSD: a resend with the same id (on the same or a new connection) gets
//! the recorded reply; the same id from another entity is another request (ids are qualified
//! by the authenticated entity, so one entity can neither collide with nor replay another's).

use quarry_types::{EntityName, ErrorCode, ObjectOp, OpOutput, ReqId};

use crate::common::{self, MonClient, PG_NUM, POOL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_are_qualified_by_the_entity() {
    let cluster = common::start_with(1, vec![(POOL, PG_NUM, 1), ("other", PG_NUM, 1)]).await;
    let osd = cluster.start_osd_detached(0).await;
    let admin_mon = common::admin(&cluster).await;
    let mut admin = admin_mon.osd_client(osd.addr()).await;
    admin.pool = "other".into();
    let other_mon = MonClient::connect(
        cluster.mon_addr(),
        EntityName::client("other"),
        cluster.user_key("other"),
    )
    .await;
    let mut other = other_mon.osd_client(osd.addr()).await;
    other.pool = "other".into();

    let id = ReqId { client: 42, tid: 1 };
    let create = vec![ObjectOp::Create { exclusive: true }];
    assert_eq!(admin.exec_with_id("o", create.clone(), id).await, Ok(vec![OpOutput::None]));
    assert_eq!(admin.exec_with_id("o", create.clone(), id).await, Ok(vec![OpOutput::None]));
    // A resend on a new connection of the same entity: the recorded answer.
    let mut again = admin_mon.osd_client(osd.addr()).await;
    again.pool = "other".into();
    assert_eq!(again.exec_with_id("o", create.clone(), id).await, Ok(vec![OpOutput::None]));
    // The same id from another entity runs (and fails: the object exists).
    assert_eq!(other.exec_with_id("o", create.clone(), id).await, Err(ErrorCode::EEXIST));
    // A new id of the admin is a new request.
    let next = ReqId { client: 42, tid: 2 };
    assert_eq!(admin.exec_with_id("o", create, next).await, Err(ErrorCode::EEXIST));
    osd.shutdown().await;
    cluster.shutdown().await;
}
