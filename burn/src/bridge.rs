//! burn's wgpu backend primitive (`Cube`) to and from the cubecl tensors the kernels bind.
//!
//! Without burn's `fusion` feature `Cube` is `CubeBackend` and its primitive is the cubecl
//! tensor itself. With it, `Cube` is `Fusion<CubeBackend>`: a primitive is a lazy fusion tensor
//! (an id in the fusion server's handle container), so an input is resolved through the fusion
//! client (which first runs the operations queued on its stream) and an output is registered
//! as a new handle with an `Init` operation, as burn-fusion's own `float_from_data` does. The
//! ops run eagerly, between the fused blocks before and after them: fusion never fuses across
//! them, as it does not across any op it has no fuser for.

use burn::backend::Cube;
use burn_cubecl::tensor::CubeTensor;

/// A float (or int: the same type on this backend) primitive of burn's wgpu backend.
pub(crate) type Prim = <burn::tensor::Float as burn::tensor::BackendPrimitive<Cube>>::Primitive;

#[cfg(not(feature = "fusion"))]
mod imp {
    use super::*;

    pub(crate) fn to_cube(p: Prim) -> CubeTensor {
        p
    }

    pub(crate) fn from_cube(t: CubeTensor) -> Prim {
        t
    }
}

#[cfg(feature = "fusion")]
mod imp {
    use super::*;
    use burn::backend::TensorMetadata;
    use burn_cubecl::CubeBackend;
    use burn_cubecl::fusion::CubeFusionHandle;
    use burn_fusion::NoOp;
    use burn_fusion::custom::{OperationIr, OperationOutput, StreamId};
    use burn_ir::InitOperationIr;

    /// The cubecl tensor behind a fusion tensor: the fusion client runs what is queued on the
    /// tensor's stream, then hands over its handle (shared with the container while the fusion
    /// tensor lives elsewhere, so cubecl's in-place checks see this reference).
    pub(crate) fn to_cube(p: Prim) -> CubeTensor {
        let client = p.client.clone();
        client.resolve_tensor_float::<CubeBackend>(p)
    }

    /// A fusion tensor for a cubecl tensor the kernels wrote: its handle is registered with the
    /// fusion server of its device and an `Init` operation (no work) makes it a tensor of the
    /// current stream.
    pub(crate) fn from_cube(t: CubeTensor) -> Prim {
        let client = burn_fusion::get_client::<CubeBackend>(&t.device);
        let (shape, dtype) = (t.shape(), t.dtype);
        let handle = CubeFusionHandle::from(t);
        let desc = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
        client
            .register(
                StreamId::current(),
                OperationIr::Init(desc),
                NoOp::<CubeBackend>::new(),
            )
            .output()
    }
}

pub(crate) use imp::{from_cube, to_cube};
