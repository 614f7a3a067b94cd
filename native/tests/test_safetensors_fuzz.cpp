// Fuzz: thousands of seeded mutations of a valid safetensors image (header bytes, the length
// field, offsets, shapes, truncation). The parser must never crash or read out of bounds
// (run under ASan too) and must answer only OK or ERR_CHECKPOINT; an OK answer must describe
// ranges inside the image.
#include <string>
#include <vector>

#include "elmo/safetensors.h"
#include "harness.h"

using elmo::Code;

static std::vector<uint8_t> valid_image() {
  std::string header =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
      "\"a.bias\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[24,30]},"
      "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[30,38]},"
      "\"h\":{\"dtype\":\"F16\",\"shape\":[1,1],\"data_offsets\":[38,40]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<uint8_t> img(8);
  for (int i = 0; i < 8; ++i) img[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  img.insert(img.end(), header.begin(), header.end());
  for (int i = 0; i < 40; ++i) img.push_back(static_cast<uint8_t>(i));
  return img;
}

// Interesting replacement tokens for the header text.
static const char* kTokens[] = {"0", "1", "-1", "24", "30", "40", "4294967296", "18446744073709551615",
                                "1e3", "[]", "{}", "\"F32\"", "\"I8\"", "\"BOOL\"", "null", "\"", "\\", ",", ":",
                                "[0,0]", "[40,40]", "\\u0000", "\\ud800", "\xff", "true"};

TEST_CASE(mutated_images) {
  const std::vector<uint8_t> base = valid_image();
  {
    elmo::StIndex idx;
    CHECK_OK(elmo::parse_safetensors(base.data(), base.size(), &idx));
    CHECK(idx.tensors.size() == 4);
  }
  elmo_test::Rng rng(12345);
  int ok = 0, rejected = 0;
  const int kIters = 20000;
  for (int it = 0; it < kIters; ++it) {
    std::vector<uint8_t> img = base;
    const int muts = 1 + static_cast<int>(rng.randint(3));
    for (int m = 0; m < muts; ++m) {
      switch (rng.randint(6)) {
        case 0:  // flip a random byte anywhere
          if (img.empty()) break;
          img[static_cast<size_t>(rng.randint(static_cast<int64_t>(img.size())))] ^= static_cast<uint8_t>(1 + rng.randint(255));
          break;
        case 1: {  // rewrite the length field
          uint64_t n = rng.randint(2) ? rng.next() : static_cast<uint64_t>(rng.randint(static_cast<int64_t>(img.size()) + 16));
          for (int i = 0; i < 8; ++i) img[i] = static_cast<uint8_t>(n >> (8 * i));
          break;
        }
        case 2:  // truncate
          img.resize(static_cast<size_t>(rng.randint(static_cast<int64_t>(img.size()) + 1)));
          break;
        case 3: {  // replace a digit run or any byte of the header with a token
          if (img.size() <= 9) break;
          const size_t pos = 8 + static_cast<size_t>(rng.randint(static_cast<int64_t>(img.size() - 8)));
          size_t end = pos;
          while (end < img.size() && img[end] >= '0' && img[end] <= '9') ++end;
          if (end == pos) end = pos + 1;
          const std::string tok = kTokens[rng.randint(sizeof(kTokens) / sizeof(kTokens[0]))];
          img.erase(img.begin() + static_cast<std::ptrdiff_t>(pos), img.begin() + static_cast<std::ptrdiff_t>(std::min(end, img.size())));
          img.insert(img.begin() + static_cast<std::ptrdiff_t>(pos), tok.begin(), tok.end());
          break;
        }
        case 4:  // append or drop data bytes
          if (rng.randint(2)) img.push_back(0);
          else if (!img.empty()) img.pop_back();
          break;
        case 5: {  // delete a random span
          if (img.empty()) break;
          const size_t pos = static_cast<size_t>(rng.randint(static_cast<int64_t>(img.size())));
          const size_t len = std::min(img.size() - pos, static_cast<size_t>(1 + rng.randint(8)));
          img.erase(img.begin() + static_cast<std::ptrdiff_t>(pos), img.begin() + static_cast<std::ptrdiff_t>(pos + len));
          break;
        }
      }
    }
    // Copy into an exact-size heap buffer so ASan sees any read past the end.
    std::unique_ptr<uint8_t[]> buf(new uint8_t[img.size() ? img.size() : 1]);
    if (!img.empty()) std::memcpy(buf.get(), img.data(), img.size());
    elmo::StIndex idx;
    elmo::Status st = elmo::parse_safetensors(buf.get(), img.size(), &idx);
    if (st.is_ok()) {
      ++ok;
      for (const auto& t : idx.tensors) {
        const bool inside = t.data >= buf.get() && t.data + t.nbytes() <= buf.get() + img.size();
        CHECK(inside);
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < t.nbytes(); ++i) sink = static_cast<uint8_t>(sink + t.data[i]);
        (void)sink;
      }
    } else {
      ++rejected;
      if (st.code() != Code::kCheckpoint) {
        ++elmo_test::failures();
        std::fprintf(stderr, "  iteration %d: unexpected %s: %s\n", it, elmo::code_name(st.code()), st.message().c_str());
      }
    }
  }
  std::printf("  %d mutated images: %d accepted, %d rejected\n", kIters, ok, rejected);
  CHECK(rejected > kIters / 2);
}

int main() { return elmo_test::run_all_tests(); }
