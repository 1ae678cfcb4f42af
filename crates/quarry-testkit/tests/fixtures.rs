//! Fixture maps place pools as the monitor does.

use quarry_testkit::fixtures::{osd_info, pool_info};
use quarry_testkit::MapBuilder;

#[test]
fn builder_places_over_the_osds_that_are_in() {
    let map = MapBuilder::new()
        .epoch(5)
        .osds(0..3)
        .edit_osd(2, |o| o.in_cluster = false)
        .down(1)
        .pool(1, "rbd", 8, 2)
        .build();
    assert_eq!(map.epoch, 5);
    assert!(!map.osds[&1].up && map.osds[&0].up);
    let pool = map.pool_by_name("rbd").unwrap();
    assert_eq!((pool.pg_num, pool.size, pool.min_size), (8, 2, 1));
    for set in &pool.acting {
        assert_eq!(set.len(), 2, "{set:?}");
        assert!(!set.contains(&2), "osd.2 is out: {set:?}");
    }
    let pinned = MapBuilder::new().osd(osd_info(4)).pool_entry(pool_info(7, "x", 1, vec![vec![4]]));
    assert_eq!(pinned.build().acting(quarry_types::PgId { pool: 7, seed: 0 }), &[4]);
}
