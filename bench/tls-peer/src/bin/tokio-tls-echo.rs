//! TLS echo server written the way a typical tokio user would:
//! one task per connection, tokio-rustls (rustls, ring provider) accepting the TLS
//! session, then tokio-util LengthDelimitedCodec (4-byte little-endian length,
//! 1 MiB frames at most) via Framed + SinkExt/StreamExt over the TLS stream.
//! `--threads 1` (the default) runs a current_thread runtime, `--threads T` a
//! multi-thread runtime with T workers.
//!
//!   tokio-tls-echo --addr 127.0.0.1:9443 [--threads T] --cert CERT.pem --key KEY.pem

use futures::{SinkExt, StreamExt};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tls_peer::{Args, MAX_FRAME};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

fn main() {
    let a = Args::parse();
    let addr = a.str_or("addr", "127.0.0.1:9443");
    let threads: usize = a.num_or("threads", 1);
    // `--tls-cert/--tls-key` are accepted too, as kendynet's echo_server spells them.
    let cert = a.get("cert").or(a.get("tls-cert"));
    let key = a.get("key").or(a.get("tls-key"));
    let (Some(cert), Some(key)) = (cert, key) else {
        eprintln!("usage: tokio-tls-echo --addr HOST:PORT [--threads T] --cert FILE --key FILE");
        std::process::exit(2);
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| {
            eprintln!("tokio-tls-echo: {cert}: {e}");
            std::process::exit(2);
        });
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| {
        eprintln!("tokio-tls-echo: {key}: {e}");
        std::process::exit(2);
    });
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap_or_else(|e| {
            eprintln!("tokio-tls-echo: certificate/key: {e}");
            std::process::exit(2);
        });
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = builder.enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("tokio-tls-echo: accept: {e}");
                    continue;
                }
            };
            sock.set_nodelay(true).ok();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(sock).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        eprintln!("tokio-tls-echo: handshake: {e}");
                        return;
                    }
                };
                let codec = LengthDelimitedCodec::builder()
                    .little_endian()
                    .length_field_length(4)
                    .max_frame_length(MAX_FRAME)
                    .new_codec();
                let mut framed = Framed::new(tls, codec);
                while let Some(frame) = framed.next().await {
                    let Ok(frame) = frame else { break };
                    if framed.send(frame.freeze()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}
