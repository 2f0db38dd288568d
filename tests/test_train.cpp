#include <gtest/gtest.h>
#include <ATen/ATen.h>
#include "train/adamw.h"
using namespace sluice;
TEST(AdamW, Debug) {
  at::manual_seed(0);
  at::Tensor p = at::randn({4, 3}).requires_grad_(true);
  OptimConfig c;
  AdamW opt({{"w", p}}, c);
  p.mutable_grad() = at::randn({4, 3});
  std::cout << p << std::endl;
  opt.step(1e-3);
  std::cout << p << std::endl;
  std::cout << opt.groups()[0].params[0].step << opt.groups()[0].params[0].exp_avg_sq << std::endl;
}
