//! Token endpoint throughput (`client_credentials`) beside the raw RSA-2048
//! sign rate of the same crypto library, on the same machine, in the same run.
//!
//! `cargo run --release -p wiresocket-bench --bin token-bench [-- SECONDS CONCURRENCY]`
//!
//! Every token answer is an RS256 signature plus a refresh-token row written
//! to the store, so the ratio shows what HTTP, client authentication and
//! persistence cost on top of the signature itself. A second table times
//! token verification (what every WebSocket connect pays): ours, with the
//! key parsed once, beside jsonwebtoken's, which parses it on every call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use auth::signing::SigningKey;
use domain::claims::Claims;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn sample_claims() -> Claims {
    Claims {
        iss: "http://127.0.0.1:8080/0196f0e0-0000-7000-8000-000000000000".into(),
        sub: "wsc_abcdefghijklmnopqrstuv".into(),
        aud: "wiresocket".into(),
        exp: 2_000_000_000,
        iat: 1_999_999_100,
        jti: "abcdefghijklmnopqrstuv".into(),
        client_id: "wsc_abcdefghijklmnopqrstuv".into(),
        tid: "0196f0e0-0000-7000-8000-000000000000".into(),
        app: "0196f0e0-0000-7000-8000-000000000001".into(),
        region: "eu-central-1".into(),
        scope: "WireSocket.API".into(),
        origins: vec!["myapp.com".into()],
        docs: None,
        access: None,
        name: None,
        nbf: None,
    }
}

/// Runs `f` on `threads` OS threads for `dur`; answers operations per second.
fn rate(threads: usize, dur: Duration, f: impl Fn() + Send + Sync + 'static) -> f64 {
    let f = Arc::new(f);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (f, count) = (f.clone(), count.clone());
            std::thread::spawn(move || {
                while start.elapsed() < dur {
                    f();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn token_endpoint_rate(secs: u64, concurrency: usize) -> (f64, u64) {
    let dir = std::env::temp_dir().join(format!("wiresocket-bench-{}", uuid::Uuid::new_v4()));
    let mut config = server::Config::for_data_dir(&dir).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    // One client from one address: the per-IP and per-client token limits
    // (on by default) would answer nearly everything with 429.
    config.rate_limits.auth_per_ip = None;
    config.rate_limits.token_per_client = None;
    let app = server::Application::build(config).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let (id, secret) = wiresocket_bench::enterprise_app(&client, &url).await;

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, id, secret, ok, failed) =
                (client.clone(), url.clone(), id.clone(), secret.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let r = client
                        .post(format!("{url}/oauth/token"))
                        .basic_auth(&id, Some(&secret))
                        .form(&[("grant_type", "client_credentials")])
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = tx.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    (ok.load(Ordering::Relaxed) as f64 / elapsed, failed.load(Ordering::Relaxed))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let dur = Duration::from_secs(secs);

    let key = Arc::new(SigningKey::generate("bench".into()).unwrap());
    let claims = sample_claims();
    let raw = {
        let (key, claims) = (key.clone(), claims.clone());
        rate(threads, dur, move || {
            key.sign(&claims).unwrap();
        })
    };
    let der = key.to_pkcs8().unwrap();
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", base64_lines(der.as_slice()));
    let jwt_lib = {
        let enc = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        rate(threads, dur, move || {
            jsonwebtoken::encode(&header, &claims, &enc).unwrap();
        })
    };

    // Verification: what every WebSocket connect pays.
    let token = key.sign(&sample_claims()).unwrap();
    let now = time::OffsetDateTime::from_unix_timestamp(1_999_999_200).unwrap();
    let ours_verify = {
        let (vk, token) = (key.verifying_key().unwrap(), token.clone());
        rate(threads, dur, move || {
            auth::signing::verify(&token, &vk, now).unwrap();
        })
    };
    let jwt_lib_verify = {
        let dec = jsonwebtoken::DecodingKey::from_rsa_components(key.public_n(), key.public_e()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        rate(threads, dur, move || {
            jsonwebtoken::decode::<Claims>(&token, &dec, &validation).unwrap();
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (endpoint, failed) = rt.block_on(token_endpoint_rate(secs, concurrency));

    println!("\nToken service, {threads} cores, {secs} s per row, {concurrency} concurrent HTTP clients\n");
    println!("| measure                                               | ops/s    | vs raw sign |");
    println!("|-------------------------------------------------------|----------|-------------|");
    println!("| raw RS256 sign, aws-lc-rs (cached key; what we use)   | {raw:>8.0} | 1.00        |");
    println!("| RS256 encode, jsonwebtoken 11 (aws_lc_rs backend)     | {jwt_lib:>8.0} | {:<11.2} |", jwt_lib / raw);
    println!("| POST /oauth/token client_credentials (HTTP+auth+store)| {endpoint:>8.0} | {:<11.2} |", endpoint / raw);
    println!();
    println!("| measure                                               | ops/s    | vs ours     |");
    println!("|-------------------------------------------------------|----------|-------------|");
    println!("| RS256 verify + claims, ours (parsed key; what we use) | {ours_verify:>8.0} | 1.00        |");
    println!(
        "| RS256 decode, jsonwebtoken 11 (aws_lc_rs backend)     | {jwt_lib_verify:>8.0} | {:<11.2} |",
        jwt_lib_verify / ours_verify
    );
    if failed > 0 {
        println!("\n{failed} token requests failed");
    }
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes().chunks(64).map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join("\n")
}
