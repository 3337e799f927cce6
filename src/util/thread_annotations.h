// Clang's thread-safety annotations (-Wthread-safety): which mutex guards a
// member, which lock a function needs or takes, and which thread a member
// belongs to, stated in the declarations and checked by the compiler. Other
// compilers see empty macros. The CI check (scripts/thread_safety.sh, the
// ctest test ThreadSafety.AnnotatedSourcesCompileClean) compiles the library
// with clang and -Werror=thread-safety.
//
//   GUARDED_BY(mu)       a member read or written only with `mu` held
//   PT_GUARDED_BY(mu)    what a pointer member points to, likewise
//   REQUIRES(mu)         the function must be called with `mu` held
//   EXCLUDES(mu)         the function takes `mu` itself: not with it held
//   ACQUIRE / RELEASE    the function takes / lets go of the capability
//   ASSERT_CAPABILITY    after the call the capability counts as held
//   CAPABILITY / SCOPED_CAPABILITY   a lock type / a scoped holder of one
#pragma once

#if defined(__clang__)
#define EPLB_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define EPLB_THREAD_ANNOTATION(x)
#endif

#ifndef CAPABILITY
#define CAPABILITY(x) EPLB_THREAD_ANNOTATION(capability(x))
#endif
#ifndef SCOPED_CAPABILITY
#define SCOPED_CAPABILITY EPLB_THREAD_ANNOTATION(scoped_lockable)
#endif
#ifndef GUARDED_BY
#define GUARDED_BY(x) EPLB_THREAD_ANNOTATION(guarded_by(x))
#endif
#ifndef PT_GUARDED_BY
#define PT_GUARDED_BY(x) EPLB_THREAD_ANNOTATION(pt_guarded_by(x))
#endif
#ifndef REQUIRES
#define REQUIRES(...) EPLB_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#endif
#ifndef EXCLUDES
#define EXCLUDES(...) EPLB_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#endif
#ifndef ACQUIRE
#define ACQUIRE(...) EPLB_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#endif
#ifndef RELEASE
#define RELEASE(...) EPLB_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#endif
#ifndef ASSERT_CAPABILITY
#define ASSERT_CAPABILITY(x) EPLB_THREAD_ANNOTATION(assert_capability(x))
#endif
#ifndef RETURN_CAPABILITY
#define RETURN_CAPABILITY(x) EPLB_THREAD_ANNOTATION(lock_returned(x))
#endif
#ifndef NO_THREAD_SAFETY_ANALYSIS
#define NO_THREAD_SAFETY_ANALYSIS EPLB_THREAD_ANNOTATION(no_thread_safety_analysis)
#endif
