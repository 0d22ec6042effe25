//! Wiring: the gRPC services, health and reflection on an already bound listener.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::grpc::pb::checkpoint_service_server::CheckpointServiceServer;
use crate::grpc::pb::issuance_service_server::IssuanceServiceServer;
use crate::grpc::pb::key_service_server::KeyServiceServer;
use crate::grpc::{pb, CheckpointHandler, IssuanceHandler, KeyHandler, ServiceState};

/// Largest request accepted, in bytes. The largest legitimate request (an application) is well
/// under 2 KiB.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// How long a status list is good for: an offline checkpoint refreshes it within this time,
/// or it says that single use was not checked.
pub const DEFAULT_STATUS_LIST_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// A server failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves every service on `listener` until `shutdown` completes, then lets calls in flight
/// finish.
pub async fn run(
    listener: TcpListener,
    state: ServiceState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let state = Arc::new(state);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<IssuanceServiceServer<IssuanceHandler>>().await;
    health_reporter.set_serving::<CheckpointServiceServer<CheckpointHandler>>().await;
    health_reporter.set_serving::<KeyServiceServer<KeyHandler>>().await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let issuance =
        IssuanceServiceServer::new(IssuanceHandler::new(state.clone())).max_decoding_message_size(MAX_REQUEST_BYTES);
    let checkpoint = CheckpointServiceServer::new(CheckpointHandler::new(state.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let keys = KeyServiceServer::new(KeyHandler::new(state.clone())).max_decoding_message_size(MAX_REQUEST_BYTES);

    Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(issuance)
        .add_service(checkpoint)
        .add_service(keys)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            shutdown.await;
            // End the streams, or they would hold the server open.
            state.closing.send_replace(true);
        })
        .await?;
    Ok(())
}

/// Why the service state could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Keys or secret.
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    /// The database.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Opens (creating on first start) the data directory and its database, and assembles the
/// state the handlers share. Returns the files this start created.
pub async fn open_state(
    data_dir: &std::path::Path,
    signing_key: Option<&std::path::Path>,
    clock: Arc<dyn crate::clock::Clock>,
    policy: crate::policy::IssuancePolicy,
) -> Result<(ServiceState, Vec<std::path::PathBuf>), OpenError> {
    let provisioned = crate::datadir::provision(data_dir, signing_key, clock.now())?;
    let store = crate::store::SqliteStore::open(&provisioned.database).await?;
    let state = ServiceState {
        store: Arc::new(store),
        signer: provisioned.signer,
        keys: provisioned.keys,
        secret: provisioned.secret,
        clock,
        policy,
        trust: crate::grpc::SignedTrustList { bytes: provisioned.trust_list_bytes, list: provisioned.trust_list },
        status_list_lifetime: DEFAULT_STATUS_LIST_LIFETIME,
        status_changes: tokio::sync::watch::channel(0).0,
        closing: tokio::sync::watch::channel(false).0,
    };
    Ok((state, provisioned.created))
}
