//! Gathering every estate's metrics in one place: each estate's own Prometheus scrapes its
//! propwatch and forwards with `remote_write` (the shipped
//! config/centre/prometheus-remote-write.yml) to the group's VictoriaMetrics, where the
//! series of two estates stand side by side by their `site` and `region` labels and a fleet
//! query (open incidents by estate) answers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::services::{Prometheus, Victoria};
use common::{wait_for, SimulatedSite};
use propwatch::simulator::ScenarioKind;

const DEADLINE: Duration = Duration::from_secs(60);

fn estate_toml(addrs: &[SocketAddr], site: &str, region: &str) -> String {
    format!(
        "{}\n[alarms]\neval_interval_ms = 200\n",
        common::test_estate(addrs).replacen(
            "id = \"test-estate\"",
            &format!("id = \"{site}\"\nregion = \"{region}\""),
            1,
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_estate_s_metrics_reach_the_group_s_victoriametrics() {
    let vm_dir = tempfile::tempdir().unwrap();
    let vm = Victoria::start(vm_dir.path()).await;
    let shipped =
        std::fs::read_to_string(common::repo().join("config/centre/prometheus-remote-write.yml"))
            .unwrap();
    assert!(shipped.contains("CENTRAL_VM") && shipped.contains("127.0.0.1:9780"));
    let mut estates = Vec::new();
    let mut proms = Vec::new();
    for (site, region) in [("estate-a", "华东分公司"), ("estate-b", "华南分公司")] {
        let s = SimulatedSite::start(4, |ad| estate_toml(ad, site, region), &[]).await;
        let d = propwatch::app::start(s.site.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        // the shipped file as an estate runs it: its own daemon, the group's address, and a
        // scrape every second for the test
        let config = shipped
            .replace("CENTRAL_VM", &format!("127.0.0.1:{}", vm.port))
            .replace("127.0.0.1:9780", &d.http_addr.to_string())
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("batch_send_deadline: 5s", "batch_send_deadline: 1s");
        proms.push((
            Prometheus::start_with_config(dir.path(), &config).await,
            dir,
        ));
        estates.push((s, d));
    }
    // an entrapment at estate b only
    estates[1]
        .0
        .sim
        .inject(ScenarioKind::Entrapment, Some("lift-1"), None)
        .unwrap();

    // both estates' series, by site and region, in the one database
    wait_for(
        "both estates' devices in VictoriaMetrics",
        DEADLINE,
        || async {
            let r = vm
                .query("count by (site, region) (propwatch_device_up)")
                .await?;
            let sites: Vec<(String, String)> = r
                .iter()
                .map(|s| {
                    (
                        s["metric"]["site"].as_str().unwrap_or("").to_string(),
                        s["metric"]["region"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            (sites.contains(&("estate-a".into(), "华东分公司".into()))
                && sites.contains(&("estate-b".into(), "华南分公司".into())))
            .then_some(())
        },
    )
    .await;
    // a fleet question: which estates have an open P1 incident (entrapment) now
    let open = wait_for(
        "estate b's entrapment in the fleet query",
        DEADLINE,
        || async {
            let r = vm
                .query(r#"sum by (site) (propwatch_incidents_open{plan="entrapment"}) > 0"#)
                .await?;
            (r.len() == 1).then_some(r)
        },
    )
    .await;
    assert_eq!(open[0]["metric"]["site"], "estate-b", "{open:?}");
    // the daemons' own health per estate, as a fleet panel would show it
    let build = vm
        .query("count by (site) (propwatch_build_info)")
        .await
        .unwrap();
    assert_eq!(build.len(), 2, "{build:?}");
    for (_, d) in estates {
        d.stop(Duration::from_secs(5)).await;
    }
}
