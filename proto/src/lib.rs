//! Berth's protobuf bindings for containerd 1.6's API v1 wire contract: prost messages and tonic clients/servers, one Rust module per proto package.

pub use prost;
pub use prost_types;

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;

    use crate::containerd::services::{
        containers, content, diff, events, images, introspection, leases, namespaces, snapshots,
        tasks, version,
    };
    use crate::containerd::{runc, task, types, v1};

    /// Field numbers (in order) of the top-level fields present in an encoded message.
    fn field_numbers(mut buf: &[u8]) -> Vec<u32> {
        fn varint(buf: &mut &[u8]) -> u64 {
            let mut value = 0u64;
            let mut shift = 0;
            loop {
                let (byte, rest) = buf.split_first().expect("truncated varint");
                *buf = rest;
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return value;
                }
                shift += 7;
            }
        }
        let mut numbers = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf);
            numbers.push(u32::try_from(key >> 3).expect("field number"));
            let skip = match key & 7 {
                0 => {
                    varint(&mut buf);
                    0
                }
                1 => 8,
                2 => usize::try_from(varint(&mut buf)).expect("length"),
                5 => 4,
                other => panic!("unexpected wire type {other}"),
            };
            buf = &buf[skip..];
        }
        numbers
    }

    fn numbers_of(msg: &impl Message) -> Vec<u32> {
        field_numbers(&msg.encode_to_vec())
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn any(type_url: &str) -> prost_types::Any {
        prost_types::Any {
            type_url: type_url.to_owned(),
            value: vec![1, 2, 3],
        }
    }

    fn ts() -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: 1,
            nanos: 2,
        }
    }

    #[test]
    fn descriptor_annotations_is_field_5() {
        let d = types::Descriptor {
            annotations: labels(&[("a", "b")]),
            ..Default::default()
        };
        assert_eq!(numbers_of(&d), [5]);
        let d = types::Descriptor {
            media_type: "m".into(),
            digest: "sha256:x".into(),
            size: 7,
            annotations: labels(&[("a", "b")]),
        };
        assert_eq!(numbers_of(&d), [1, 2, 3, 5]);
        assert_eq!(types::Descriptor::decode(&*d.encode_to_vec()).unwrap(), d);
    }

    #[test]
    fn image_timestamps_are_7_and_8() {
        let img = images::v1::Image {
            name: "n".into(),
            target: Some(types::Descriptor::default()),
            created_at: Some(ts()),
            updated_at: Some(ts()),
            ..Default::default()
        };
        assert_eq!(numbers_of(&img), [1, 3, 7, 8]);
    }

    #[test]
    fn commit_snapshot_puts_name_before_key() {
        let req = snapshots::v1::CommitSnapshotRequest {
            snapshotter: "overlayfs".into(),
            name: "committed".into(),
            key: "active".into(),
            labels: labels(&[("k", "v")]),
        };
        let bytes = req.encode_to_vec();
        assert_eq!(field_numbers(&bytes), [1, 2, 3, 4]);
        // name=2 (tag 0x12) carries "committed", key=3 (tag 0x1a) carries "active".
        let name_at = bytes.windows(2).position(|w| w == [0x12, 9]).unwrap();
        assert_eq!(&bytes[name_at + 2..name_at + 11], b"committed");
        let key_at = bytes.windows(2).position(|w| w == [0x1a, 6]).unwrap();
        assert_eq!(&bytes[key_at + 2..key_at + 8], b"active");

        let upd = snapshots::v1::UpdateSnapshotRequest {
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels".into()],
            }),
            ..Default::default()
        };
        assert_eq!(numbers_of(&upd), [3]);
    }

    #[test]
    fn tasks_request_numbering() {
        let exec = tasks::v1::ExecProcessRequest {
            exec_id: "e1".into(),
            ..Default::default()
        };
        assert_eq!(numbers_of(&exec), [7]);
        let exec = tasks::v1::ExecProcessRequest {
            spec: Some(any(
                "types.containerd.io/opencontainers/runtime-spec/1/Process",
            )),
            ..Default::default()
        };
        assert_eq!(numbers_of(&exec), [6]);

        let create = tasks::v1::CreateTaskRequest {
            container_id: "c".into(),
            rootfs: vec![types::Mount::default()],
            checkpoint: Some(types::Descriptor::default()),
            options: Some(any("containerd.runc.v1.Options")),
            runtime_path: "/bin/x".into(),
            ..Default::default()
        };
        assert_eq!(numbers_of(&create), [1, 3, 8, 9, 10]);

        let del = tasks::v1::DeleteResponse {
            id: "x".into(),
            pid: 1,
            exit_status: 2,
            exited_at: Some(ts()),
        };
        assert_eq!(numbers_of(&del), [1, 2, 3, 4]);
    }

    #[test]
    fn shim_numbering() {
        let create = task::v2::CreateTaskRequest {
            options: Some(any("containerd.runc.v1.Options")),
            ..Default::default()
        };
        assert_eq!(numbers_of(&create), [10]);
        let del = task::v2::DeleteResponse {
            pid: 1,
            exit_status: 2,
            exited_at: Some(ts()),
        };
        assert_eq!(numbers_of(&del), [1, 2, 3]);
        let state = task::v2::StateResponse {
            status: v1::types::Status::Pausing as i32,
            exec_id: "e".into(),
            ..Default::default()
        };
        assert_eq!(numbers_of(&state), [4, 11]);
        let opts = runc::v1::Options {
            criu_work_path: "/w".into(),
            ..Default::default()
        };
        assert_eq!(numbers_of(&opts), [11]);
    }

    #[test]
    fn misc_gaps_and_types() {
        let lease = leases::v1::CreateRequest {
            id: "l".into(),
            labels: labels(&[("a", "b")]),
        };
        assert_eq!(numbers_of(&lease), [1, 3]);

        let diff = diff::v1::DiffResponse {
            diff: Some(types::Descriptor::default()),
        };
        assert_eq!(numbers_of(&diff), [3]);

        let plugin = introspection::v1::Plugin {
            init_err: Some(crate::google::rpc::Status {
                code: 9,
                message: "skip plugin".into(),
                details: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(numbers_of(&plugin), [7]);

        let container = containers::v1::Container {
            runtime: Some(containers::v1::container::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
            extensions: HashMap::from([("ext".to_owned(), any("x"))]),
            ..Default::default()
        };
        assert_eq!(numbers_of(&container), [4, 10]);

        let del = crate::containerd::events::TaskDelete {
            exited_at: Some(ts()),
            id: "e".into(),
            ..Default::default()
        };
        assert_eq!(numbers_of(&del), [4, 5]);
        let exit = crate::containerd::events::TaskExit {
            exited_at: Some(ts()),
            ..Default::default()
        };
        assert_eq!(numbers_of(&exit), [5]);

        let ns = namespaces::v1::ListNamespacesRequest { filter: "x".into() };
        assert_eq!(numbers_of(&ns), [1]);
    }

    #[test]
    fn enum_values() {
        use v1::types::Status;
        assert_eq!(Status::Unknown as i32, 0);
        assert_eq!(Status::Created as i32, 1);
        assert_eq!(Status::Running as i32, 2);
        assert_eq!(Status::Stopped as i32, 3);
        assert_eq!(Status::Paused as i32, 4);
        assert_eq!(Status::Pausing as i32, 5);
        assert_eq!(content::v1::WriteAction::Stat as i32, 0);
        assert_eq!(content::v1::WriteAction::Write as i32, 1);
        assert_eq!(content::v1::WriteAction::Commit as i32, 2);
        assert_eq!(snapshots::v1::Kind::Unknown as i32, 0);
        assert_eq!(snapshots::v1::Kind::View as i32, 1);
        assert_eq!(snapshots::v1::Kind::Active as i32, 2);
        assert_eq!(snapshots::v1::Kind::Committed as i32, 3);
    }

    #[test]
    fn service_names() {
        use tonic::server::NamedService;
        assert_eq!(
            namespaces::v1::namespaces_server::SERVICE_NAME,
            "containerd.services.namespaces.v1.Namespaces"
        );
        assert_eq!(
            <namespaces::v1::namespaces_server::NamespacesServer<()> as NamedService>::NAME,
            "containerd.services.namespaces.v1.Namespaces"
        );
        let names = [
            containers::v1::containers_server::SERVICE_NAME,
            content::v1::content_server::SERVICE_NAME,
            diff::v1::diff_server::SERVICE_NAME,
            events::v1::events_server::SERVICE_NAME,
            events::ttrpc::v1::events_server::SERVICE_NAME,
            images::v1::images_server::SERVICE_NAME,
            introspection::v1::introspection_server::SERVICE_NAME,
            leases::v1::leases_server::SERVICE_NAME,
            snapshots::v1::snapshots_server::SERVICE_NAME,
            tasks::v1::tasks_server::SERVICE_NAME,
            version::v1::version_server::SERVICE_NAME,
            task::v2::task_server::SERVICE_NAME,
        ];
        assert_eq!(
            names,
            [
                "containerd.services.containers.v1.Containers",
                "containerd.services.content.v1.Content",
                "containerd.services.diff.v1.Diff",
                "containerd.services.events.v1.Events",
                "containerd.services.events.ttrpc.v1.Events",
                "containerd.services.images.v1.Images",
                "containerd.services.introspection.v1.Introspection",
                "containerd.services.leases.v1.Leases",
                "containerd.services.snapshots.v1.Snapshots",
                "containerd.services.tasks.v1.Tasks",
                "containerd.services.version.v1.Version",
                "containerd.task.v2.Task",
            ]
        );
    }

    /// Every streaming rpc, as `package.Service/Method` with client/server streaming flags.
    #[test]
    fn streaming_markers() {
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));
        let fds = prost_types::FileDescriptorSet::decode(&bytes[..]).unwrap();
        let mut streaming = Vec::new();
        let mut rpc_count = 0;
        for file in &fds.file {
            for service in &file.service {
                for method in &service.method {
                    rpc_count += 1;
                    if method.client_streaming() || method.server_streaming() {
                        streaming.push((
                            format!("{}.{}/{}", file.package(), service.name(), method.name()),
                            method.client_streaming(),
                            method.server_streaming(),
                        ));
                    }
                }
            }
        }
        streaming.sort();
        let expected = [
            (
                "containerd.services.containers.v1.Containers/ListStream",
                false,
                true,
            ),
            ("containerd.services.content.v1.Content/List", false, true),
            ("containerd.services.content.v1.Content/Read", false, true),
            ("containerd.services.content.v1.Content/Write", true, true),
            (
                "containerd.services.events.v1.Events/Subscribe",
                false,
                true,
            ),
            (
                "containerd.services.snapshots.v1.Snapshots/List",
                false,
                true,
            ),
            (
                "containerd.services.streaming.v1.Streaming/Stream",
                true,
                true,
            ),
            ("runtime.v1.RuntimeService/GetContainerEvents", false, true),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(n, c, s)| ((*n).to_owned(), *c, *s))
            .collect();
        assert_eq!(streaming, expected);
        // containers 6, content 9, diff 2, events 3, ttrpc events 1, images 5,
        // introspection 2, leases 6, namespaces 5, snapshots 10, tasks 17,
        // version 1 (67 daemon rpcs), plus containerd 1.7's streaming 1 and transfer 1, plus 17
        // shim rpcs, plus the CRI's 28 runtime and 5 image rpcs.
        assert_eq!(rpc_count, 119);
    }

    #[test]
    fn transfer_types_numbering() {
        use crate::containerd::services::transfer::v1::{TransferOptions, TransferRequest};
        use crate::containerd::types::transfer::{
            AuthResponse, ImageStore, OciRegistry, Progress, RegistryResolver, UnpackConfiguration,
        };
        let req = TransferRequest {
            source: Some(any("s")),
            destination: Some(any("d")),
            options: Some(TransferOptions {
                progress_stream: "p".into(),
            }),
        };
        assert_eq!(numbers_of(&req), [1, 2, 3]);
        let store = ImageStore {
            name: "n".into(),
            labels: labels(&[("a", "b")]),
            platforms: vec![types::Platform::default()],
            all_metadata: true,
            manifest_limit: 1,
            unpacks: vec![UnpackConfiguration::default()],
            ..Default::default()
        };
        assert_eq!(numbers_of(&store), [1, 2, 3, 4, 5, 10]);
        let reg = OciRegistry {
            reference: "r".into(),
            resolver: Some(RegistryResolver {
                auth_stream: "a".into(),
                host_dir: "h".into(),
                default_scheme: "http".into(),
                ..Default::default()
            }),
        };
        assert_eq!(numbers_of(&reg), [1, 2]);
        assert_eq!(numbers_of(reg.resolver.as_ref().unwrap()), [1, 3, 4]);
        let auth = AuthResponse {
            auth_type: 1,
            secret: "s".into(),
            username: "u".into(),
            expire_at: Some(ts()),
        };
        assert_eq!(numbers_of(&auth), [1, 2, 3, 4]);
        let p = Progress {
            event: "e".into(),
            name: "n".into(),
            parents: vec!["p".into()],
            progress: 1,
            total: 2,
            desc: Some(types::Descriptor::default()),
        };
        assert_eq!(numbers_of(&p), [1, 2, 3, 4, 5, 6]);
    }
}
