//! `grpc.health.v1.Health` as tonic-health serves it, except that a `Watch` ends
//! once it has told its client NOT_SERVING during a shutdown: a client-side health
//! check (a gRPC load balancer) then hears the drain and goes elsewhere, and the
//! open stream does not hold the shutdown for the whole grace.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
        health_server::Health,
    },
    server::HealthService,
};

/// tonic-health's service, with watches that end at shutdown.
pub struct DrainingHealth {
    inner: HealthService,
    draining: Arc<AtomicBool>,
}

impl DrainingHealth {
    /// `inner`, whose watches end after NOT_SERVING once `draining` is set.
    pub fn new(inner: HealthService, draining: Arc<AtomicBool>) -> Self {
        Self { inner, draining }
    }
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchUntilDrained<tonic_health::server::WatchStream>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inner = self.inner.watch(request).await?.into_inner();
        Ok(Response::new(WatchUntilDrained {
            inner,
            draining: self.draining.clone(),
            done: false,
        }))
    }
}

/// A health watch that ends after the NOT_SERVING it yields while draining.
pub struct WatchUntilDrained<S> {
    inner: S,
    draining: Arc<AtomicBool>,
    done: bool,
}

impl<S> Stream for WatchUntilDrained<S>
where
    S: Stream<Item = Result<HealthCheckResponse, Status>> + Unpin,
{
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(response))) = &next
            && response.status == ServingStatus::NotServing as i32
            && self.draining.load(Ordering::SeqCst)
        {
            self.done = true;
        }
        next
    }
}
