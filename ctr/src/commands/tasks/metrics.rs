//! `berth tasks metrics [--format table|json] CONTAINER`: Containers.Get, Tasks.Get,
//! Metrics{filters ["id==C"]}; decodes the `io.containerd.cgroups.v1.Metrics` or
//! `io.containerd.cgroups.v2.Metrics` Any and prints ctr's `METRIC VALUE` table, or the whole
//! document as JSON (field names and `omitempty` as containerd's cgroups types encode them).

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::services::tasks::v1::MetricsRequest;
use berth_proto::io::containerd::cgroups::{v1, v2};
use prost::Message as _;
use serde_json::{Map, Value};

use super::pad4;
use crate::client::{tasks, Client};
use crate::error::RpcResultExt;
use crate::output::{Format, Table};

/// Flags of `tasks metrics`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Container id.
    pub id: String,
}

/// JSON with Go's `omitempty`: zero numbers, empty strings and lists and absent messages are
/// left out.
trait ToJson {
    fn to_json(&self) -> Value;
}

impl ToJson for u64 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl ToJson for u32 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        Value::from(self.as_str())
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}

fn put(obj: &mut Map<String, Value>, name: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::Number(n) => n.as_u64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if !empty {
        obj.insert(name.to_owned(), value);
    }
}

macro_rules! to_json {
    ($($ty:path { $($field:ident $(=> $name:literal)?),* $(,)? })*) => {
        $(impl ToJson for $ty {
            fn to_json(&self) -> Value {
                let mut obj = Map::new();
                $(
                    #[allow(unused_variables)]
                    let name = stringify!($field);
                    $(let name = $name;)?
                    put(&mut obj, name, self.$field.to_json());
                )*
                Value::Object(obj)
            }
        })*
    };
}

to_json! {
    v1::Metrics { hugetlb, pids, cpu, memory, blkio, rdma, network, cgroup_stats, memory_oom_control }
    v1::HugetlbStat { usage, max, failcnt, pagesize }
    v1::PidsStat { current, limit }
    v1::CpuStat { usage, throttling }
    v1::CpuUsage { total, kernel, user, per_cpu }
    v1::Throttle { periods, throttled_periods, throttled_time }
    v1::MemoryStat {
        cache, rss, rss_huge, mapped_file, dirty, writeback,
        pg_pg_in => "pgpgin", pg_pg_out => "pgpgout", pg_fault => "pgfault",
        pg_maj_fault => "pgmajfault", inactive_anon, active_anon, inactive_file, active_file,
        unevictable, hierarchical_memory_limit, hierarchical_swap_limit, total_cache, total_rss,
        total_rss_huge, total_mapped_file, total_dirty, total_writeback,
        total_pg_pg_in => "total_pgpgin", total_pg_pg_out => "total_pgpgout",
        total_pg_fault => "total_pgfault", total_pg_maj_fault => "total_pgmajfault",
        total_inactive_anon, total_active_anon, total_inactive_file, total_active_file,
        total_unevictable, usage, swap, kernel, kernel_tcp,
    }
    v1::MemoryEntry { limit, usage, max, failcnt }
    v1::MemoryOomControl { oom_kill_disable, under_oom, oom_kill }
    v1::BlkIoStat {
        io_service_bytes_recursive, io_serviced_recursive, io_queued_recursive,
        io_service_time_recursive, io_wait_time_recursive, io_merged_recursive,
        io_time_recursive, sectors_recursive,
    }
    v1::BlkIoEntry { op, device, major, minor, value }
    v1::RdmaStat { current, limit }
    v1::RdmaEntry { device, hca_handles, hca_objects }
    v1::NetworkStat {
        name, rx_bytes, rx_packets, rx_errors, rx_dropped, tx_bytes, tx_packets, tx_errors,
        tx_dropped,
    }
    v1::CgroupStats { nr_sleeping, nr_running, nr_stopped, nr_uninterruptible, nr_io_wait }
    v2::Metrics { pids, cpu, memory, rdma, io, hugetlb, memory_events }
    v2::PidsStat { current, limit }
    v2::CpuStat { usage_usec, user_usec, system_usec, nr_periods, nr_throttled, throttled_usec }
    v2::MemoryStat {
        anon, file, kernel_stack, slab, sock, shmem, file_mapped, file_dirty, file_writeback,
        anon_thp, inactive_anon, active_anon, inactive_file, active_file, unevictable,
        slab_reclaimable, slab_unreclaimable, pgfault, pgmajfault, workingset_refault,
        workingset_activate, workingset_nodereclaim, pgrefill, pgscan, pgsteal, pgactivate,
        pgdeactivate, pglazyfree, pglazyfreed, thp_fault_alloc, thp_collapse_alloc, usage,
        usage_limit, swap_usage, swap_limit,
    }
    v2::MemoryEvents { low, high, max, oom, oom_kill }
    v2::RdmaStat { current, limit }
    v2::RdmaEntry { device, hca_handles, hca_objects }
    v2::IoStat { usage }
    v2::IoEntry { major, minor, rbytes, wbytes, rios, wios }
    v2::HugeTlbStat { current, max, pagesize }
}

/// Decoded metric data.
#[derive(Debug)]
enum Data {
    V1(Box<v1::Metrics>),
    V2(Box<v2::Metrics>),
}

fn decode(any: &prost_types::Any) -> Result<Data> {
    let url = any.type_url.as_str();
    if url.ends_with("io.containerd.cgroups.v1.Metrics") {
        Ok(Data::V1(Box::new(
            v1::Metrics::decode(any.value.as_slice()).context("cannot decode v1 metrics")?,
        )))
    } else if url.ends_with("io.containerd.cgroups.v2.Metrics") {
        Ok(Data::V2(Box::new(
            v2::Metrics::decode(any.value.as_slice()).context("cannot decode v2 metrics")?,
        )))
    } else {
        bail!("cannot convert metric data of type {url:?} to cgroups.Metrics")
    }
}

/// Go's `%v` of a `[]uint64`.
fn go_list(v: &[u64]) -> String {
    let items: Vec<String> = v.iter().map(u64::to_string).collect();
    format!("[{}]", items.join(" "))
}

/// ctr's `printCgroupMetricsTable` / `printCgroup2MetricsTable` rows.
fn rows(data: &Data) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut row = |k: &str, v: String| out.push((k.to_owned(), v));
    match data {
        Data::V1(m) => {
            if let Some(mem) = &m.memory {
                let usage = mem.usage.unwrap_or_default();
                row("memory.usage_in_bytes", usage.usage.to_string());
                row("memory.limit_in_bytes", usage.limit.to_string());
                row("memory.stat.cache", mem.total_cache.to_string());
            }
            if let Some(cpu) = &m.cpu {
                let usage = cpu.usage.clone().unwrap_or_default();
                row("cpuacct.usage", usage.total.to_string());
                row("cpuacct.usage_percpu", go_list(&usage.per_cpu));
            }
            if let Some(p) = &m.pids {
                row("pids.current", p.current.to_string());
                row("pids.limit", p.limit.to_string());
            }
        }
        Data::V2(m) => {
            if let Some(p) = &m.pids {
                row("pids.current", p.current.to_string());
                row("pids.limit", p.limit.to_string());
            }
            if let Some(c) = &m.cpu {
                row("cpu.usage_usec", c.usage_usec.to_string());
                row("cpu.user_usec", c.user_usec.to_string());
                row("cpu.system_usec", c.system_usec.to_string());
                row("cpu.nr_periods", c.nr_periods.to_string());
                row("cpu.nr_throttled", c.nr_throttled.to_string());
                row("cpu.throttled_usec", c.throttled_usec.to_string());
            }
            if let Some(mem) = &m.memory {
                row("memory.usage", mem.usage.to_string());
                row("memory.usage_limit", mem.usage_limit.to_string());
                row("memory.swap_usage", mem.swap_usage.to_string());
                row("memory.swap_limit", mem.swap_limit.to_string());
            }
        }
    }
    out
}

/// Prints one data point.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    tasks::container(client, &args.id).await?;
    tasks::get(client, &args.id, "").await?;
    let metrics = client
        .tasks()
        .metrics(client.req(MetricsRequest {
            filters: vec![format!("id=={}", args.id)],
        }))
        .await
        .rpc(client, "get metrics of", tasks::task_object(&args.id, ""))?
        .into_inner()
        .metrics;
    let metric = metrics
        .into_iter()
        .next()
        .with_context(|| format!("no metrics received for task {:?}", args.id))?;
    let any = metric
        .data
        .as_ref()
        .with_context(|| format!("metrics of task {:?} carry no data", args.id))?;
    let data = decode(any)?;
    match args.format {
        Format::Json => {
            let value = match &data {
                Data::V1(m) => m.to_json(),
                Data::V2(m) => m.to_json(),
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Table => {
            let mut head = Table::new(&["ID   ", "TIMESTAMP"]);
            head.row(pad4(vec![
                metric.id.clone(),
                crate::timefmt::timestamp(metric.timestamp.as_ref()),
            ]));
            let mut table = Table::new(&["METRIC   ", "VALUE"]);
            for (k, v) in rows(&data) {
                table.row(pad4(vec![k, v]));
            }
            print!("{}\n{}", head.render(), table.render());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_json_uses_go_names_and_omits_zeroes() {
        let m = v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 2,
                limit: 0,
            }),
            memory: Some(v1::MemoryStat {
                pg_pg_in: 5,
                usage: Some(v1::MemoryEntry {
                    usage: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            m.to_json(),
            serde_json::json!({"pids": {"current": 2}, "memory": {"pgpgin": 5, "usage": {"usage": 10}}})
        );
        let rows = rows(&Data::V1(Box::new(m)));
        assert_eq!(
            rows[0],
            ("memory.usage_in_bytes".to_owned(), "10".to_owned())
        );
        assert_eq!(rows[3], ("pids.current".to_owned(), "2".to_owned()));
        assert_eq!(go_list(&[1, 2]), "[1 2]");
    }

    #[test]
    fn decode_by_type_url() {
        let m = v2::Metrics {
            pids: Some(v2::PidsStat {
                current: 1,
                limit: 9,
            }),
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: "io.containerd.cgroups.v2.Metrics".into(),
            value: m.encode_to_vec(),
        };
        assert!(matches!(decode(&any).unwrap(), Data::V2(_)));
        let bad = prost_types::Any {
            type_url: "x".into(),
            value: vec![],
        };
        assert!(decode(&bad).is_err());
    }
}
