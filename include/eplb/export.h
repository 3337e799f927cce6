// EPLB_EXPORT marks the public API. libeplb.so is built with hidden
// visibility, so only what carries this mark is exported: the engine-facing
// classes (with their type information, so an eplb::Error thrown inside the
// library is caught as one outside it) and functions. Gloo, spdlog, fmt and
// the CUDA runtime the library uses stay private to it.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define EPLB_EXPORT __attribute__((visibility("default")))
#else
#define EPLB_EXPORT
#endif
