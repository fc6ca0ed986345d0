//! Writes a self-signed certificate and its private key, PEM, for the TLS benchmark,
//! so that it needs no openssl:
//!
//!   gen-cert --out DIR [--names localhost,127.0.0.1]
//!
//! writes DIR/cert.pem and DIR/key.pem (ECDSA P-256, PKCS#8). The certificate names
//! `localhost` and the IP address 127.0.0.1 by default; it is its own CA, so a
//! client trusts it with `--ca DIR/cert.pem`.

use tls_peer::Args;

fn main() {
    let a = Args::parse();
    let out = std::path::PathBuf::from(a.str_or("out", "."));
    let names: Vec<String> = a
        .str_or("names", "localhost,127.0.0.1")
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)
        .unwrap_or_else(|e| {
            eprintln!("gen-cert: {e}");
            std::process::exit(1);
        });
    let write = |name: &str, pem: String| {
        let path = out.join(name);
        if let Err(e) = std::fs::create_dir_all(&out).and_then(|_| std::fs::write(&path, pem)) {
            eprintln!("gen-cert: {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("{}", path.display());
    };
    write("cert.pem", cert.pem());
    write("key.pem", signing_key.serialize_pem());
}
