#!/usr/bin/env python3
"""Generates crates/quarry-capi/src/stubs.rs: one exported function for every symbol of
crates/quarry-capi/consumers.txt that no other module of the crate implements.

The return type comes from Ceph's public headers (Debian's librados-dev and librbd-dev:
/usr/include/rados/librados.h, /usr/include/rbd/librbd.h). int, ssize_t and int64_t
functions return -EOPNOTSUPP; void ones do nothing; pointer-returning ones return NULL; the
two uint64_t ones return 0. Arguments are not declared (the System V and AArch64 calling
conventions let a function ignore arguments it is passed).

Run again after implementing a function:  scripts/gen-capi-stubs.py [INCLUDE_DIR]
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
crate = root / "crates" / "quarry-capi"
include = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/include")

headers = ""
for h in ["rados/librados.h", "rbd/librbd.h"]:
    headers += (include / h).read_text()
headers = re.sub(r"/\*.*?\*/", "", headers, flags=re.S)

names = []
for line in (crate / "consumers.txt").read_text().splitlines():
    if line and not line.startswith("#"):
        names.append(line.split()[0])

implemented = set()
for src in (crate / "src").glob("*.rs"):
    if src.name == "stubs.rs":
        continue
    implemented |= set(re.findall(r'extern "C" fn ((?:rados|rbd)_\w+)\s*\(', src.read_text()))

kinds = {"int": "int", "ssize_t": "ssize", "int64_t": "ssize", "uint64_t": "zero",
         "void": "void"}
out = ['//! Every librados/librbd function a Debian consumer (QEMU 7.2, fio 3.33, python3-rados,',
       '//! python3-rbd 16.2, libvirt 9.0; `consumers.txt`) references that Quarry does not',
       '//! implement yet, so those programs load (they bind every symbol at load time). Generated',
       '//! by `scripts/gen-capi-stubs.py` from Ceph\'s headers: do not edit by hand.',
       '//!',
       '//! int, ssize_t and int64_t functions return `-EOPNOTSUPP`; void ones do nothing; those',
       '//! returning a pointer return NULL, those returning uint64_t 0. Arguments are ignored.',
       '',
       'use crate::EOPNOTSUPP;',
       '',
       'macro_rules! stub {',
       '    (int $name:ident) => {',
       '        #[doc = "Not supported: returns `-EOPNOTSUPP`."]',
       '        #[no_mangle]',
       '        pub extern "C" fn $name() -> std::ffi::c_int {',
       '            EOPNOTSUPP',
       '        }',
       '    };',
       '    (ssize $name:ident) => {',
       '        #[doc = "Not supported: returns `-EOPNOTSUPP`."]',
       '        #[no_mangle]',
       '        pub extern "C" fn $name() -> i64 {',
       '            EOPNOTSUPP as i64',
       '        }',
       '    };',
       '    (zero $name:ident) => {',
       '        #[doc = "Not supported: returns 0."]',
       '        #[no_mangle]',
       '        pub extern "C" fn $name() -> u64 {',
       '            0',
       '        }',
       '    };',
       '    (void $name:ident) => {',
       '        #[doc = "Not supported: does nothing."]',
       '        #[no_mangle]',
       '        pub extern "C" fn $name() {}',
       '    };',
       '    (null $name:ident) => {',
       '        #[doc = "Not supported: returns NULL."]',
       '        #[no_mangle]',
       '        pub extern "C" fn $name() -> *mut std::ffi::c_void {',
       '            std::ptr::null_mut()',
       '        }',
       '    };',
       '}',
       '']
missing = []
for n in names:
    if n in implemented:
        continue
    m = re.search(r"CEPH_R(?:ADOS|BD)_API\s+([^;{(]*?)\b" + n + r"\s*\(", headers)
    if not m:
        missing.append(n)
        continue
    ret = " ".join(m.group(1).split())
    kind = kinds.get(ret, "null" if ret.endswith("*") or ret.endswith("_t") else None)
    if kind is None:
        sys.exit(f"{n}: unknown return type {ret!r}")
    out.append(f"stub!({kind} {n});")
if missing:
    sys.exit("not in the headers: " + " ".join(missing))
(crate / "src" / "stubs.rs").write_text("\n".join(out) + "\n")
print(f"{len(names) - len(implemented & set(names))} stubs, {len(implemented)} implemented")
