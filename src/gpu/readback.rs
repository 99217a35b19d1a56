//! Async readback of a mapped staging buffer. The browser resolves the map on its
//! event loop; native code polls the device until the callback fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Slot {
    result: Option<Result<(), wgpu::BufferAsyncError>>,
    waker: Option<Waker>,
}

/// Resolves when `map_async` on the staging buffer completes.
pub(crate) struct MapFuture {
    slot: Arc<Mutex<Slot>>,
    #[cfg(not(target_arch = "wasm32"))]
    device: wgpu::Device,
}

impl MapFuture {
    pub fn new(buffer: &wgpu::Buffer, bytes: u64, device: &wgpu::Device) -> Self {
        let slot: Arc<Mutex<Slot>> = Arc::default();
        let sink = slot.clone();
        buffer.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            s.result = Some(r);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        #[cfg(target_arch = "wasm32")]
        let _ = device;
        MapFuture {
            slot,
            #[cfg(not(target_arch = "wasm32"))]
            device: device.clone(),
        }
    }
}

impl Future for MapFuture {
    type Output = Result<(), wgpu::BufferAsyncError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Blocks until the GPU is done: native readback is a sync point anyway.
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
