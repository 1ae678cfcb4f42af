//! The kit's own tests: the log guard has teeth, the proxy cuts, stalls and delays, the
//! cluster hooks (restart, link cut, disk damage) do what they say, fixtures place like the
//! monitor.

mod fixtures;
mod hooks;
mod logs;
mod proxy;
