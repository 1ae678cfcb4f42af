//! The proxy forwards, cuts, stalls and delays, on open connections and new ones.

use std::time::{Duration, Instant};

use quarry_testkit::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free port.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await?;
    Ok(back)
}

#[tokio::test]
async fn forwards_cuts_stalls_delays_and_resumes() {
    let proxy = Proxy::start(echo().await).await.unwrap();
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut a, b"hello").await.unwrap(), b"hello");

    // Delay: every chunk waits, both ways.
    proxy.delay(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(round_trip(&mut a, b"slow").await.unwrap(), b"slow");
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());

    // Stall: the connection stays open, nothing arrives until resume.
    proxy.stall();
    a.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    let waited = tokio::time::timeout(Duration::from_millis(500), a.read_exact(&mut buf)).await;
    assert!(waited.is_err(), "a stalled link delivered bytes");
    proxy.resume();
    tokio::time::timeout(Duration::from_secs(5), a.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"held");

    // Cut: the open connection ends, new ones are closed at once.
    proxy.cut();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), a.read_to_end(&mut rest)).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "{ended:?}");
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(round_trip(&mut b, b"x").await.is_err(), "a cut link carried bytes");

    proxy.resume();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut c, b"back").await.unwrap(), b"back");
}
