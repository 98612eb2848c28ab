// The two-direction selective scan on the CPU: both outputs and every gradient equal two one-direction calls bit for
// bit, and bad inputs are refused with a message naming the op. Gradcheck and the CUDA-vs-CPU check are in the op
// table (tests/ops/op_table.cpp).
#include <gtest/gtest.h>

#include "tests/bidir_scan_check.h"

using namespace mt;
using namespace mt::test;

TEST(SelectiveScanBidir, EqualsTwoScansBitForBit) {
  for (DType dt : {DType::F64, DType::F32, DType::BF16})
    for (bool flags : {true, false}) expect_bidir_equals_two_scans({2, 13, 5, 4, dt, flags}, Device::cpu());
  expect_bidir_equals_two_scans({3, 9, 4, 3, DType::F32, true, /*bc_pad=*/2}, Device::cpu());
  expect_bidir_equals_two_scans({1, 1, 3, 2, DType::F64, true}, Device::cpu());
}

TEST(SelectiveScanBidir, RefusesDirectionsThatDoNotMatch) {
  Generator gen(5);
  auto t = [&](const Shape& s) { return Tensor::randn(s, gen); };
  const ScanDirection f{t({2, 6, 4}), t({2, 6, 4}), Tensor::rand({4, 3}, gen, -1, -0.5), t({2, 6, 3}), t({2, 6, 3}),
                        Tensor(),     Tensor()};
  ScanDirection r = f;
  r.u = t({2, 5, 4});
  r.delta = t({2, 5, 4});
  r.Bm = t({2, 5, 3});
  r.Cm = t({2, 5, 3});
  std::string msg = shape_error_of([&] { selective_scan_bidir(f, r, Tensor(), true); });
  EXPECT_NE(msg.find("selective_scan_bidir"), std::string::npos) << msg;
  EXPECT_NE(msg.find("reverse direction"), std::string::npos) << msg;
  // One direction's own inputs are checked as selective_scan checks them, under this op's name.
  r = f;
  r.A = Tensor::rand({4, 2}, gen, -1, -0.5);
  msg = shape_error_of([&] { selective_scan_bidir(f, r, Tensor(), true); });
  EXPECT_NE(msg.find("selective_scan_bidir: A must be"), std::string::npos) << msg;
  msg = shape_error_of([&] { selective_scan_bidir(f, f, t({2, 6, 5}), true); });
  EXPECT_NE(msg.find("selective_scan_bidir: z must have"), std::string::npos) << msg;
}
