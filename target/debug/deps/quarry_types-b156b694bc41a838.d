/work/main/target/debug/deps/quarry_types-b156b694bc41a838.d: crates/quarry-types/src/lib.rs crates/quarry-types/src/error.rs crates/quarry-types/src/ids.rs crates/quarry-types/src/ops.rs

/work/main/target/debug/deps/quarry_types-b156b694bc41a838: crates/quarry-types/src/lib.rs crates/quarry-types/src/error.rs crates/quarry-types/src/ids.rs crates/quarry-types/src/ops.rs

crates/quarry-types/src/lib.rs:
crates/quarry-types/src/error.rs:
crates/quarry-types/src/ids.rs:
crates/quarry-types/src/ops.rs:
