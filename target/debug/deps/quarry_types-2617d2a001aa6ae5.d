/work/main/target/debug/deps/quarry_types-2617d2a001aa6ae5.d: crates/quarry-types/src/lib.rs crates/quarry-types/src/error.rs crates/quarry-types/src/ids.rs crates/quarry-types/src/ops.rs

/work/main/target/debug/deps/libquarry_types-2617d2a001aa6ae5.rlib: crates/quarry-types/src/lib.rs crates/quarry-types/src/error.rs crates/quarry-types/src/ids.rs crates/quarry-types/src/ops.rs

/work/main/target/debug/deps/libquarry_types-2617d2a001aa6ae5.rmeta: crates/quarry-types/src/lib.rs crates/quarry-types/src/error.rs crates/quarry-types/src/ids.rs crates/quarry-types/src/ops.rs

crates/quarry-types/src/lib.rs:
crates/quarry-types/src/error.rs:
crates/quarry-types/src/ids.rs:
crates/quarry-types/src/ops.rs:
