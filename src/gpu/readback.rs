//! Futures over wgpu callbacks: a mapped staging buffer (readback) and "all
//! submitted work done". The browser resolves them on its event loop; native
//! code polls the device until the callback fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    result: Option<T>,
    waker: Option<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            result: None,
            waker: None,
        }
    }
}

/// Resolves with the value a wgpu callback delivers.
pub(crate) struct CallbackFuture<T> {
    slot: Arc<Mutex<Slot<T>>>,
    #[cfg(not(target_arch = "wasm32"))]
    device: wgpu::Device,
}

/// The callback end of a [`CallbackFuture`]: call it once with the result.
fn sink<T>(slot: &Arc<Mutex<Slot<T>>>) -> impl FnOnce(T) + Send + 'static
where
    T: Send + 'static,
{
    let slot = slot.clone();
    move |value| {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        s.result = Some(value);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl<T> CallbackFuture<T> {
    fn from_slot(slot: Arc<Mutex<Slot<T>>>, device: &wgpu::Device) -> Self {
        #[cfg(target_arch = "wasm32")]
        let _ = device;
        CallbackFuture {
            slot,
            #[cfg(not(target_arch = "wasm32"))]
            device: device.clone(),
        }
    }
}

/// Resolves when `map_async` on the staging buffer completes.
pub(crate) type MapFuture = CallbackFuture<Result<(), wgpu::BufferAsyncError>>;

impl MapFuture {
    pub fn new(buffer: &wgpu::Buffer, bytes: u64, device: &wgpu::Device) -> Self {
        let slot = Arc::default();
        buffer.map_async(wgpu::MapMode::Read, 0..bytes, sink(&slot));
        Self::from_slot(slot, device)
    }
}

/// Resolves when the GPU has finished everything submitted before it was made.
pub(crate) type WorkDoneFuture = CallbackFuture<()>;

impl WorkDoneFuture {
    pub fn submitted_work_done(queue: &wgpu::Queue, device: &wgpu::Device) -> Self {
        let slot = Arc::default();
        let done = sink(&slot);
        queue.on_submitted_work_done(move || done(()));
        Self::from_slot(slot, device)
    }
}

impl<T> Future for CallbackFuture<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
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
