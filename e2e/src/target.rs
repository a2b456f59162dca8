//! A scrape target serving a fixed exposition, for tests that need a Prometheus to scrape
//! names or values no real exporter here exposes. Each scrape answers with the body and
//! content type given; the `Accept` header of the last scrape is kept for assertions. The
//! server listens on a free loopback port and stops when dropped.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct StaticTarget {
    port: u16,
    accept: Arc<Mutex<Option<String>>>,
    server: JoinHandle<()>,
}

impl StaticTarget {
    pub async fn start(content_type: &'static str, body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let accept = Arc::new(Mutex::new(None));
        let seen = accept.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    // One request per connection; its headers end with an empty line.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let accept = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Accept: ").or_else(|| l.strip_prefix("accept: ")))
                        .map(str::to_string);
                    *seen.lock().expect("not poisoned") = accept;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        StaticTarget { port, accept, server }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `Accept` header of the last scrape, if any came.
    pub fn last_accept(&self) -> Option<String> {
        self.accept.lock().expect("not poisoned").clone()
    }
}

impl Drop for StaticTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}
