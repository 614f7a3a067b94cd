// The whole BERT graph on the CUDA backend against the transformers fixtures
// (test/fixtures/bert-*: checkpoint, packed inputs, float64 expected outputs), and against the
// CPU backend on the same inputs:
//   * fp32 compute (exact SIMT GEMM, fp32 attention): 1e-4 relative, as the CPU parity test;
//   * bf16 (a bf16 model: bf16 weight copies as the GEMMs' b, bf16 attention operands; tensor
//     cores, fp32 accumulate and statistics): 8e-2 of the tensor's scale.
//     The fixtures' random weights (std 0.2, a saturated tanh pooler) amplify rounding: the same
//     checkpoint in PyTorch with only the Linear operands rounded to bf16 (fp32 accumulate)
//     already moves pooled by 0.043 and logits by 0.040 (scales 1.0 and 3.9); attention in bf16
//     adds to that (0.066 on pooled was measured on an H200). A wrong kernel is off by O(scale).
// A bf16 model with fp32 attention computes what the CPU bf16 model computes (a rounded to bf16,
// bf16 weights, fp32 sums) up to summation order: 1e-3 of the scale. With bf16 compute, keeping
// activations in bf16 (CudaOptions::bf16_activations) changes no bit of the outputs; keeping the
// hidden states in bf16 too (CudaOptions::bf16_hidden) stays within 1.2e-1 of the scale. A
// warmed-up forward allocates nothing, on the device or pinned.
// Exit code 77 with "SKIP: no CUDA device (...)" when there is no usable device.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "elmo/bert.h"
#include "elmo/cuda_backend.h"
#include "elmo/json.h"
#include "tests/bert_fixture.h"
#include "tests/harness.h"

using bert_fixture::Fixture;
using bert_fixture::download;
using bert_fixture::load_fixture;

namespace {

// |got - want| <= tol * (max|want| + |want|) elementwise: relative to the element and to the
// tensor's scale (bf16 rounding error scales with the operands, not with each output).
void compare_scaled(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
                    double tol) {
  CHECK(got.size() == want.size());
  if (got.size() != want.size()) return;
  double scale = 0, worst = 0;
  size_t at = 0;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double excess = std::isnan(err) ? 1e300 : err - tol * (scale + std::fabs(want[i]));
    if (excess > worst) worst = excess, at = i;
  }
  if (worst > 0) {
    ++elmo_test::failures();
    std::fprintf(stderr, "  %s: mismatch at %zu: got %.7g want %.7g (tol %g, scale %g)\n", what.c_str(), at,
                 got[at], want[at], tol, scale);
  }
}

const char* kFixtures[] = {"bert-a-cls", "bert-b-mlm", "bert-b-multilabel"};
std::string g_skip;

// compute: the backend's operand precision and the model's (BertOptions), as the addon sets them.
// bf16_hidden: CudaOptions::bf16_hidden (off unless asked).
void run_fixtures(elmo::DType compute, double tol, int bf16_hidden = -1) {
  elmo::CudaOptions opts;
  opts.compute = compute;
  opts.bf16_hidden = bf16_hidden;
  elmo::BertOptions model_opts;
  model_opts.precision = compute;
  std::unique_ptr<elmo::Backend> gpu;
  CHECK_OK(elmo::make_cuda_backend(&gpu, opts));
  if (!gpu) return;
  for (const char* name : kFixtures) {
    Fixture f;
    if (!load_fixture(name, &f)) continue;
    elmo_test::context() = std::string("[") + name + " " + elmo::dtype_name(compute) + "]";
    std::unique_ptr<elmo::Bert> m;
    CHECK_OK(elmo::Bert::load(f.dir, gpu.get(), &m, model_opts));
    if (!m) continue;
    CHECK((compute == elmo::DType::kBF16) == (m->compute_weight_bytes() > 0));
    elmo::BertOutputs out;
    CHECK_OK(m->forward(f.inputs(), {}, &out));
    CHECK_OK(gpu->sync());
    const std::pair<const char*, elmo::Tensor*> outs[] = {
        {"hidden", &out.hidden}, {"pooled", &out.pooled}, {"logits", &out.logits}, {"mlm_logits", &out.mlm_logits}};
    for (const auto& o : outs) {
      auto it = f.outputs.find(o.first);
      if (it == f.outputs.end()) continue;
      CHECK(!o.second->empty() && o.second->dtype == elmo::DType::kF32);
      if (o.second->empty()) continue;
      const std::vector<float> got = download(*gpu, *o.second);
      compare_scaled(std::string(name) + " " + o.first + " " + elmo::dtype_name(compute), got, it->second.values, tol);
      // bf16 hidden states reach the output through one conversion: every value is a bf16 one.
      if (bf16_hidden > 0 && std::string(o.first) == "hidden") elmo_test::all_bf16_values("hidden", got);
    }
    // Twice more on the same model: the arena is reused, nothing at all is allocated (device
    // or pinned: the backend counts both) and the result is the same bits.
    const uint64_t warm = gpu->allocations();
    elmo::BertOutputs again;
    CHECK_OK(m->forward(f.inputs(), {}, &again));
    const std::vector<float> h1 = download(*gpu, again.hidden);
    CHECK_OK(m->forward(f.inputs(), {}, &again));
    const std::vector<float> h2 = download(*gpu, again.hidden);
    elmo_test::bit_equal((std::string(name) + " repeat").c_str(), h1.data(), h2.data(),
                         static_cast<int64_t>(h1.size()));
    CHECK(m->arena_allocations() == 1);
    if (gpu->allocations() != warm) {
      ++elmo_test::failures();
      std::fprintf(stderr, "  %s: %llu allocations in two warmed-up forwards\n", name,
                   static_cast<unsigned long long>(gpu->allocations() - warm));
    }
  }
  elmo_test::context().clear();
}

}  // namespace

TEST_CASE(bert_fp32_matches_transformers) { run_fixtures(elmo::DType::kF32, 1e-4); }

TEST_CASE(bert_bf16_matches_transformers) { run_fixtures(elmo::DType::kBF16, 8e-2); }

// bf16 hidden states (CudaOptions::bf16_hidden, an opt-in): every residual sum rounded to bf16
// too. On the CPU with bf16 storage (test_bert_bf16), with bf16 activations as here, that
// moved these fixtures up to 0.086 of the scale from fp32 (pooled), against 0.081 with f32
// hidden states (this GPU measured 0.066 on pooled then), hence 1.2e-1. A wrong kernel is still
// off by O(scale).
TEST_CASE(bert_bf16_hidden_states_match_transformers) { run_fixtures(elmo::DType::kBF16, 1.2e-1, 1); }

TEST_CASE(bert_cpu_and_cuda_agree) {
  Fixture f;
  if (!load_fixture("bert-a-cls", &f)) return;
  std::unique_ptr<elmo::Backend> gpu, cpu;
  CHECK_OK(elmo::make_cuda_backend(&gpu));
  CHECK_OK(elmo::make_cpu_backend(&cpu));
  if (!gpu || !cpu) return;
  std::unique_ptr<elmo::Bert> mg, mc;
  CHECK_OK(elmo::Bert::load(f.dir, gpu.get(), &mg));
  CHECK_OK(elmo::Bert::load(f.dir, cpu.get(), &mc));
  if (!mg || !mc) return;
  elmo::BertOutputs og, oc;
  CHECK_OK(mg->forward(f.inputs(), {}, &og));
  CHECK_OK(mc->forward(f.inputs(), {}, &oc));
  compare_scaled("cpu vs cuda logits", download(*gpu, og.logits), download(*cpu, oc.logits), 1e-5);
  compare_scaled("cpu vs cuda hidden", download(*gpu, og.hidden), download(*cpu, oc.hidden), 1e-5);
}

// For each fixture: its model in bf16 on backends x and y, one forward each, then
// check(what, x's values, y's values) on the hidden states and, where the model has them, the
// logits.
template <typename Check>
void bf16_model_pair(elmo::Backend* x, elmo::Backend* y, Check check) {
  elmo::BertOptions bf16;
  bf16.precision = elmo::DType::kBF16;
  for (const char* name : kFixtures) {
    Fixture f;
    if (!load_fixture(name, &f)) continue;
    std::unique_ptr<elmo::Bert> mx, my;
    CHECK_OK(elmo::Bert::load(f.dir, x, &mx, bf16));
    CHECK_OK(elmo::Bert::load(f.dir, y, &my, bf16));
    if (!mx || !my) continue;
    elmo::BertOutputs ox, oy;
    CHECK_OK(mx->forward(f.inputs(), {}, &ox));
    CHECK_OK(my->forward(f.inputs(), {}, &oy));
    check(std::string(name) + " hidden", download(*x, ox.hidden), download(*y, oy.hidden));
    if (!oy.logits.empty()) check(std::string(name) + " logits", download(*x, ox.logits), download(*y, oy.logits));
  }
}

TEST_CASE(bert_bf16_weights_cpu_and_cuda_agree) {
  std::unique_ptr<elmo::Backend> gpu, cpu;
  CHECK_OK(elmo::make_cuda_backend(&gpu));  // fp32 attention: only the GEMMs are bf16
  CHECK_OK(elmo::make_cpu_backend(&cpu));
  if (!gpu || !cpu) return;
  bf16_model_pair(gpu.get(), cpu.get(), [](const std::string& what, const std::vector<float>& g,
                                           const std::vector<float>& c) {
    compare_scaled(what + " bf16 cpu vs cuda", g, c, 1e-3);
  });
}

// A bf16 model with bf16 compute (what precision: 'bf16' selects) keeps qkv, the attention
// output and the FFN activation in bf16 (Backend::gemm_bf16_activations, attention_bf16_io).
// Each is rounded where it is produced exactly as its consumer rounded the f32 value before,
// so the outputs must be the same bits as with every activation in f32.
TEST_CASE(bert_bf16_activations_change_no_bits) {
  elmo::CudaOptions on, off;
  on.compute = off.compute = elmo::DType::kBF16;
  on.bf16_hidden = off.bf16_hidden = -1;  // f32 hidden states, whatever the environment says
  off.bf16_activations = false;
  std::unique_ptr<elmo::Backend> gon, goff;
  CHECK_OK(elmo::make_cuda_backend(&gon, on));
  CHECK_OK(elmo::make_cuda_backend(&goff, off));
  if (!gon || !goff) return;
  CHECK(gon->gemm_bf16_activations() && gon->attention_bf16_io(64) && !gon->attention_bf16_io(48));
  CHECK(!goff->gemm_bf16_activations() && !goff->attention_bf16_io(64));
  bf16_model_pair(gon.get(), goff.get(), [](const std::string& what, const std::vector<float>& a,
                                            const std::vector<float>& b) {
    CHECK(a.size() == b.size());
    elmo_test::bit_equal((what + ", bf16 activations on vs off").c_str(), a.data(), b.data(),
                         static_cast<int64_t>(std::min(a.size(), b.size())));
  });
}

int main() {
  std::vector<elmo::CudaDeviceInfo> devs;
  std::string reason;
  elmo::Status st = elmo::cuda_devices(&devs, &reason);
  if (!st.is_ok() || devs.empty()) {
    std::printf("SKIP: no CUDA device (%s)\n", st.is_ok() ? reason.c_str() : st.message().c_str());
    return 77;
  }
  return elmo_test::run_all_tests();
}
