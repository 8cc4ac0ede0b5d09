//! `stream`: streaming the whole pinset through the REST API.
//!
//! The peer starts on the large fixture with a fake daemon that holds every pin, and waits for the
//! tracker's start-up rebuild to end (so statuses are `pinned` and nothing else runs). Then, from
//! the one-thread client, `GET /allocations` and `GET /pins?local=true` are each read to their end
//! on a fresh connection: NDJSON lines counted (must equal the pins), bytes, time to first byte,
//! the `X-Stream-Error` trailer (must be empty).

use std::sync::Arc;
use std::time::Duration;

use crate::client::{self, Streamed};
use crate::measure::{self, round1, round2, secs, verdict};
use crate::peer::{self, Fixture, Peer};
use crate::Args;

pub fn run(_args: &Args, fixture: &Fixture) -> anyhow::Result<()> {
    let pins = fixture.pins;
    println!("== stream: {pins} pins ({})", measure::load_line());
    let load_before = measure::load();
    let ipfs = Arc::new(peer::fake_with_pins(fixture.seed, pins));
    let runtime = peer::server_runtime()?;
    let rebuilds = peer::rebuilds_seen();
    let peer = runtime.block_on(async {
        let peer = Peer::start(fixture.dir.path(), ipfs).await?;
        peer::wait_rebuild(rebuilds + 1, Duration::from_secs(300)).await?;
        peer::wait_all_pinned(&peer.cluster, pins, Duration::from_secs(60)).await?;
        anyhow::Ok(peer)
    })?;
    let addr = peer.addr;

    let mut figures = serde_json::Map::new();
    let mut all_ok = true;
    for (key, path) in [("allocations", "/allocations"), ("pins_local", "/pins?local=true")] {
        let (p0, m0) = (measure::process_cpu(), measure::machine_busy());
        let (streamed, client_cpu) = client::on_client_thread(move || client::get_stream(addr, path, false))?;
        let process_cpu = measure::process_cpu() - p0;
        let others_cpu = measure::machine_busy().saturating_sub(m0).saturating_sub(process_cpu);
        let s: Streamed = streamed?;
        let rate = s.lines as f64 / s.total.as_secs_f64();
        let mb_s = s.bytes as f64 / 1e6 / s.total.as_secs_f64();
        let ok = s.status == 200 && s.lines == pins && s.stream_error.as_deref() == Some("");
        all_ok &= ok;
        let server_cpu = process_cpu.saturating_sub(client_cpu);
        println!(
            "   GET {path:<18} {} lines in {:.2} s: {rate:.0} items/s, {mb_s:.1} MB/s, first byte {:.1} ms, {} B/item   target >= 200000 items/s: {}",
            s.lines,
            s.total.as_secs_f64(),
            s.first_byte.as_secs_f64() * 1000.0,
            s.bytes / s.lines.max(1),
            verdict(rate >= 200_000.0)
        );
        println!(
            "   {:<22} status {}, trailer X-Stream-Error {:?}, count {}; CPU server {:.2} s, client {:.2} s, other processes {:.2} s",
            "",
            s.status,
            s.stream_error.as_deref().unwrap_or("(none)"),
            if s.lines == pins { "OK" } else { "WRONG" },
            server_cpu.as_secs_f64(),
            client_cpu.as_secs_f64(),
            others_cpu.as_secs_f64()
        );
        figures.insert(
            key.into(),
            serde_json::json!({
                "items": s.lines, "seconds": secs(s.total), "items_per_s": rate.round(), "mb_per_s": round1(mb_s),
                "bytes": s.bytes, "first_byte_ms": round2(s.first_byte.as_secs_f64() * 1000.0), "ok": ok,
                "server_cpu_s": secs(server_cpu), "client_cpu_s": secs(client_cpu), "others_cpu_s": secs(others_cpu),
                "target_ge_200000_items_per_s": rate >= 200_000.0,
            }),
        );
    }
    runtime.block_on(peer.stop());
    figures.insert("scenario".into(), "stream".into());
    figures.insert("pins".into(), pins.into());
    figures.insert("load_before".into(), load_before);
    figures.insert("load_after".into(), measure::load());
    measure::emit(serde_json::Value::Object(figures));
    anyhow::ensure!(all_ok, "stream: wrong count, status or stream error (see above)");
    Ok(())
}
