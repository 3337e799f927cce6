// The CUDA driver API (libcuda.so.1), loaded at run time. eplb's dynamically
// loaded backends (nccl, nccl_stateless, nixl with device memory) use it for
// streams, events and context selection, so they work in builds without the
// CUDA toolkit and every binary still starts on machines without a GPU.
// Declarations are eplb's own, of the public driver API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace eplb::cuda {

using CuResult = int;  // CUresult
constexpr CuResult kSuccess = 0;
constexpr CuResult kErrorNotReady = 600;
using CuDevice = int;
using CuDevicePtr = unsigned long long;
struct CuCtx;
using CuContext = CuCtx*;
struct CuStreamT;
using CuStream = CuStreamT*;  // the same object as a cudaStream_t
struct CuEventT;
using CuEvent = CuEventT*;

struct Driver {
  std::string path;
  CuResult (*Init)(unsigned);
  CuResult (*DriverGetVersion)(int*);
  CuResult (*DeviceGetCount)(int*);
  CuResult (*DeviceGet)(CuDevice*, int);
  CuResult (*DeviceGetName)(char*, int, CuDevice);
  CuResult (*DeviceGetPCIBusId)(char*, int, CuDevice);
  CuResult (*DevicePrimaryCtxRetain)(CuContext*, CuDevice);
  CuResult (*DevicePrimaryCtxRelease)(CuDevice);
  CuResult (*CtxSetCurrent)(CuContext);
  CuResult (*CtxGetCurrent)(CuContext*);
  CuResult (*StreamCreate)(CuStream*, unsigned);
  CuResult (*StreamDestroy)(CuStream);
  CuResult (*StreamSynchronize)(CuStream);
  CuResult (*EventCreate)(CuEvent*, unsigned);
  CuResult (*EventRecord)(CuEvent, CuStream);
  CuResult (*EventQuery)(CuEvent);
  CuResult (*EventDestroy)(CuEvent);
  CuResult (*GetErrorString)(CuResult, const char**);
  CuResult (*MemAlloc)(CuDevicePtr*, size_t);
  CuResult (*MemFree)(CuDevicePtr);
  CuResult (*MemcpyHtoD)(CuDevicePtr, const void*, size_t);
  CuResult (*MemcpyDtoH)(void*, CuDevicePtr, size_t);
  CuResult (*PointerGetAttribute)(void*, int, CuDevicePtr);
};

// Loads libcuda.so.1 and runs cuInit(0) once per process. Throws
// Error("cuda", "load driver" / "cuInit", ...) with the reason when there is
// no driver or no usable GPU.
const Driver& GetDriver();

// Number of CUDA devices, or -1 with `why_not` set (no driver, no device).
// Never throws.
int DeviceCount(std::string* why_not = nullptr);

// The PCI bus id of a device ("0000:19:00.0"): the same GPU has the same id
// in every process of a host, whatever CUDA_VISIBLE_DEVICES says. Throws
// Error(layer, "identify GPU", ...) where the driver cannot tell.
std::string PciBusId(int device, const std::string& layer, int rank = -1);

// "CUDA_ERROR_...: text" for a driver result.
std::string ErrorString(CuResult r);

// Throws Error(layer, operation, "<call> failed: <error>", rank) unless r is success.
void Check(CuResult r, const char* call, const std::string& layer, const std::string& operation,
           int rank = -1);

// Retains the primary context of a device (the one the CUDA runtime and the
// engine use) for the life of the object; MakeCurrent() binds it to the
// calling thread.
class DeviceContext {
 public:
  DeviceContext(int device, const std::string& layer, int rank = -1);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;
  void MakeCurrent() const;
  CuContext context() const { return ctx_; }
  int device() const { return device_; }

 private:
  int device_;
  CuDevice dev_ = 0;
  CuContext ctx_ = nullptr;
  std::string layer_;
  int rank_;
};

// Makes a device's primary context current for a scope and restores the
// thread's previous context afterwards, so eplb never changes the device an
// engine thread was working on.
class ScopedCurrent {
 public:
  explicit ScopedCurrent(const DeviceContext& ctx);
  ~ScopedCurrent();
  ScopedCurrent(const ScopedCurrent&) = delete;
  ScopedCurrent& operator=(const ScopedCurrent&) = delete;

 private:
  CuContext previous_ = nullptr;
  bool restore_ = false;
};

// The device a pointer belongs to (CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL), or
// -1 when it is not device memory the driver knows.
int PointerDevice(const void* p);

}  // namespace eplb::cuda
