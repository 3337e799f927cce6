// main of every test executable: gtest's, except that a process started as
// `--eplb-worker=NAME` runs that registered worker instead (multiprocess.h).
#include <gtest/gtest.h>

#include "support/multiprocess.h"

int main(int argc, char** argv) {
  if (auto rc = eplb::test::MaybeRunWorker(argc, argv)) return *rc;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
