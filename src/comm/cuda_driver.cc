#include "comm/cuda_driver.h"

#include <mutex>

#include "comm/dynlib.h"
#include "eplb/error.h"

namespace eplb::cuda {
namespace {

constexpr int kPointerAttributeDeviceOrdinal = 9;  // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL

std::string Describe(const Driver& d, CuResult r) {
  const char* s = nullptr;
  if (d.GetErrorString && d.GetErrorString(r, &s) == kSuccess && s)
    return "CUDA error " + std::to_string(r) + ": " + s;
  return "CUDA error " + std::to_string(r);
}

struct Loaded {
  Driver driver{};
  std::string error;  // set when loading or cuInit failed
};

const Loaded& Load() {
  static Loaded loaded = [] {
    Loaded l;
    try {
      auto lib = dyn::Library::Open("cuda", "CUDA driver", {"libcuda.so.1"});
      Driver& d = l.driver;
      d.path = lib.path();
      d.Init = lib.Get<decltype(d.Init)>("cuInit");
      d.DriverGetVersion = lib.Get<decltype(d.DriverGetVersion)>("cuDriverGetVersion");
      d.DeviceGetCount = lib.Get<decltype(d.DeviceGetCount)>("cuDeviceGetCount");
      d.DeviceGet = lib.Get<decltype(d.DeviceGet)>("cuDeviceGet");
      d.DeviceGetName = lib.Get<decltype(d.DeviceGetName)>("cuDeviceGetName");
      d.DeviceGetPCIBusId = lib.Get<decltype(d.DeviceGetPCIBusId)>("cuDeviceGetPCIBusId");
      d.DevicePrimaryCtxRetain = lib.Get<decltype(d.DevicePrimaryCtxRetain)>("cuDevicePrimaryCtxRetain");
      d.DevicePrimaryCtxRelease =
          lib.Get<decltype(d.DevicePrimaryCtxRelease)>("cuDevicePrimaryCtxRelease_v2");
      d.CtxSetCurrent = lib.Get<decltype(d.CtxSetCurrent)>("cuCtxSetCurrent");
      d.CtxGetCurrent = lib.Get<decltype(d.CtxGetCurrent)>("cuCtxGetCurrent");
      d.StreamCreate = lib.Get<decltype(d.StreamCreate)>("cuStreamCreate");
      d.StreamDestroy = lib.Get<decltype(d.StreamDestroy)>("cuStreamDestroy_v2");
      d.StreamSynchronize = lib.Get<decltype(d.StreamSynchronize)>("cuStreamSynchronize");
      d.EventCreate = lib.Get<decltype(d.EventCreate)>("cuEventCreate");
      d.EventRecord = lib.Get<decltype(d.EventRecord)>("cuEventRecord");
      d.EventQuery = lib.Get<decltype(d.EventQuery)>("cuEventQuery");
      d.EventDestroy = lib.Get<decltype(d.EventDestroy)>("cuEventDestroy_v2");
      d.GetErrorString = lib.Get<decltype(d.GetErrorString)>("cuGetErrorString");
      d.MemAlloc = lib.Get<decltype(d.MemAlloc)>("cuMemAlloc_v2");
      d.MemFree = lib.Get<decltype(d.MemFree)>("cuMemFree_v2");
      d.MemcpyHtoD = lib.Get<decltype(d.MemcpyHtoD)>("cuMemcpyHtoD_v2");
      d.MemcpyDtoH = lib.Get<decltype(d.MemcpyDtoH)>("cuMemcpyDtoH_v2");
      d.PointerGetAttribute = lib.Get<decltype(d.PointerGetAttribute)>("cuPointerGetAttribute");
      CuResult r = d.Init(0);
      if (r != kSuccess) l.error = "cuInit failed: " + Describe(d, r) + " (driver " + d.path + ")";
    } catch (const Error& e) {
      l.error = e.what();
    }
    return l;
  }();
  return loaded;
}

}  // namespace

std::string ErrorString(CuResult r) { return Describe(Load().driver, r); }

const Driver& GetDriver() {
  const Loaded& l = Load();
  if (!l.error.empty()) throw Error("cuda", "initialize driver", l.error);
  return l.driver;
}

int DeviceCount(std::string* why_not) {
  const Loaded& l = Load();
  if (!l.error.empty()) {
    if (why_not) *why_not = l.error;
    return -1;
  }
  int n = 0;
  CuResult r = l.driver.DeviceGetCount(&n);
  if (r != kSuccess) {
    if (why_not) *why_not = "cuDeviceGetCount failed: " + ErrorString(r);
    return -1;
  }
  if (n == 0 && why_not) *why_not = "the CUDA driver reports no device";
  return n;
}

void Check(CuResult r, const char* call, const std::string& layer, const std::string& operation,
           int rank) {
  if (r != kSuccess) throw Error(layer, operation, std::string(call) + " failed: " + ErrorString(r), rank);
}

std::string PciBusId(int device, const std::string& layer, int rank) {
  const Driver& d = GetDriver();
  CuDevice handle = 0;
  Check(d.DeviceGet(&handle, device), "cuDeviceGet", layer, "identify GPU", rank);
  char id[64] = {};
  Check(d.DeviceGetPCIBusId(id, sizeof(id) - 1, handle), "cuDeviceGetPCIBusId", layer, "identify GPU",
        rank);
  return id;
}

DeviceContext::DeviceContext(int device, const std::string& layer, int rank)
    : device_(device), layer_(layer), rank_(rank) {
  const Driver& d = GetDriver();
  int n = 0;
  Check(d.DeviceGetCount(&n), "cuDeviceGetCount", layer, "select device", rank);
  if (device < 0 || device >= n)
    throw Error(layer, "select device",
                "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) +
                    " visible)",
                rank);
  Check(d.DeviceGet(&dev_, device), "cuDeviceGet", layer, "select device", rank);
  Check(d.DevicePrimaryCtxRetain(&ctx_, dev_), "cuDevicePrimaryCtxRetain", layer, "select device", rank);
}

DeviceContext::~DeviceContext() {
  if (ctx_) GetDriver().DevicePrimaryCtxRelease(dev_);
}

void DeviceContext::MakeCurrent() const {
  Check(GetDriver().CtxSetCurrent(ctx_), "cuCtxSetCurrent", layer_, "select device", rank_);
}

ScopedCurrent::ScopedCurrent(const DeviceContext& ctx) {
  const Driver& d = GetDriver();
  if (d.CtxGetCurrent(&previous_) == kSuccess && previous_ != ctx.context()) {
    ctx.MakeCurrent();
    restore_ = true;
  }
}

ScopedCurrent::~ScopedCurrent() {
  if (restore_) GetDriver().CtxSetCurrent(previous_);
}

int PointerDevice(const void* p) {
  const Loaded& l = Load();
  if (!l.error.empty()) return -1;
  int ordinal = -1;
  CuResult r = l.driver.PointerGetAttribute(&ordinal, kPointerAttributeDeviceOrdinal,
                                            reinterpret_cast<CuDevicePtr>(p));
  return r == kSuccess ? ordinal : -1;
}

}  // namespace eplb::cuda
