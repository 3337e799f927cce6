// The run's store when its processes share a job token (MakeTokenStore):
// keys under a prefix derived from the token, values behind an HMAC tag,
// foreign values skipped the same way on every rank.
//
// A logical key K is a chain of slots in the base store: K, K/~1, K/~2, ...
// Its value is the first slot's that carries a valid tag. Writers fill the
// first empty slot after any foreign ones with the base store's first-writer-
// wins SetIfAbsent, so a slot once written never changes, and every rank that
// walks the chain meets the same slots in the same order: a foreign value
// at K (someone who learned the prefix wrote an "abandon" before the ranks
// decided) is passed over by all of them alike, and the decision recorded in
// the next slot stands for all.
#include <spdlog/spdlog.h>

#include <set>

#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "util/mac.h"
#include "util/mutex.h"

namespace eplb {
namespace {

// Value layout: magic, 16 bytes of tag, the bytes.
constexpr uint8_t kMagic[4] = {'e', 'p', 't', '1'};
constexpr size_t kTagBytes = 16;
constexpr size_t kHeaderBytes = sizeof(kMagic) + kTagBytes;
// Foreign values passed over at one key before giving up.
constexpr int kMaxForeign = 8;
// Keys whose foreign values were reported, per process (bounded).
constexpr size_t kMaxReported = 1024;

util::MacKey Derive(std::string_view token, std::string_view label) {
  return util::HmacSha256(util::Bytes(token), {util::Bytes(label)});
}

class TokenStore final : public Store {
 public:
  TokenStore(std::shared_ptr<Store> base, std::string prefix, std::string_view token)
      : base_(std::move(base)),
        mac_key_(Derive(token, "eplb/v1/store-value-mac")),
        run_key_(Derive(token, "eplb/v1/run-key")) {
    const util::Mac tag = Derive(token, "eplb/v1/store-prefix");
    prefix_ = std::move(prefix) + "t-" + util::Hex(std::span(tag).first(16)) + "/";
  }

  std::string_view kind() const override { return base_->kind(); }

  void Set(const std::string& key, std::span<const uint8_t> value) override {
    const std::string full = prefix_ + key;
    const std::vector<uint8_t> mine = Wrap(full, value);
    for (int slot = 0; slot <= kMaxForeign; ++slot) {
      const std::vector<uint8_t> stands = base_->SetIfAbsent(Slot(full, slot), mine);
      if (stands == mine) return;
      if (Authentic(full, stands)) {
        throw Error("store", "set", "key '" + full + "' is already set in the " + std::string(kind()) +
                                        " store (keys are write-once; a stale run with the same job token?)");
      }
      Report(full, slot);
    }
    throw TooMany(full, "set");
  }

  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    const std::string full = prefix_ + key;
    const std::vector<uint8_t> mine = Wrap(full, value);
    for (int slot = 0; slot <= kMaxForeign; ++slot) {
      std::vector<uint8_t> stands = base_->SetIfAbsent(Slot(full, slot), mine);
      if (Authentic(full, stands)) return Unwrap(std::move(stands));
      Report(full, slot);
    }
    throw TooMany(full, "set-if-absent");
  }

  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    const std::string full = prefix_ + key;
    for (int slot = 0; slot <= kMaxForeign; ++slot) {
      // Throws TimeoutError (naming the slot's key) when the slot is empty at the deadline.
      std::vector<uint8_t> v = base_->Get(Slot(full, slot), deadline);
      if (Authentic(full, v)) return Unwrap(std::move(v));
      Report(full, slot);
    }
    throw TooMany(full, "get");
  }

  std::optional<std::array<uint8_t, 32>> RunKey(std::string_view purpose) const override {
    return util::HmacSha256(run_key_, {util::Bytes(purpose)});
  }

 private:
  static std::string Slot(const std::string& full, int slot) {
    return slot == 0 ? full : full + "/~" + std::to_string(slot);
  }

  // The tag covers the key (length first, so key and bytes cannot trade
  // places) and the bytes: a value moved to another key is foreign there.
  util::Mac Tag(const std::string& full, std::span<const uint8_t> value) const {
    const uint64_t n = full.size();
    return util::HmacSha256(mac_key_, {std::span(reinterpret_cast<const uint8_t*>(&n), sizeof n),
                                       util::Bytes(full), value});
  }

  std::vector<uint8_t> Wrap(const std::string& full, std::span<const uint8_t> value) const {
    const util::Mac tag = Tag(full, value);
    std::vector<uint8_t> out(kMagic, kMagic + sizeof(kMagic));
    out.insert(out.end(), tag.begin(), tag.begin() + kTagBytes);
    out.insert(out.end(), value.begin(), value.end());
    return out;
  }

  bool Authentic(const std::string& full, std::span<const uint8_t> stored) const {
    if (stored.size() < kHeaderBytes || !std::equal(kMagic, kMagic + sizeof(kMagic), stored.begin())) return false;
    const util::Mac tag = Tag(full, stored.subspan(kHeaderBytes));
    return util::ConstantTimeEqual(std::span(tag).first(kTagBytes), stored.subspan(sizeof(kMagic), kTagBytes));
  }

  static std::vector<uint8_t> Unwrap(std::vector<uint8_t> stored) {
    stored.erase(stored.begin(), stored.begin() + kHeaderBytes);
    return stored;
  }

  void Report(const std::string& full, int slot) {
    {
      util::MutexLock lock(&mu_);
      const std::string where = Slot(full, slot);
      if (reported_.count(where) || reported_.size() >= kMaxReported) return;
      reported_.insert(where);
    }
    spdlog::warn("eplb store: key '{}' holds a foreign value (it carries no valid tag of this run's job token: "
                 "someone without the token wrote it); ignored, the key moves on to slot {}",
                 Slot(full, slot), slot + 1);
  }

  Error TooMany(const std::string& full, const char* operation) const {
    return Error("store", operation,
                 "key '" + full + "': " + std::to_string(kMaxForeign + 1) +
                     " foreign values in a row (written without this run's job token): someone who can write the " +
                     std::string(kind()) + " store is interfering with the run; protect the store (README \"Security\")");
  }

  std::shared_ptr<Store> base_;
  std::string prefix_;
  const util::MacKey mac_key_;
  const util::MacKey run_key_;
  util::Mutex mu_;
  std::set<std::string> reported_ GUARDED_BY(mu_);
};

}  // namespace

std::shared_ptr<Store> MakeTokenStore(std::shared_ptr<Store> base, std::string prefix, std::string_view token) {
  if (!base) throw InvalidArgument("MakeTokenStore: no base store");
  CheckJobToken(token, "job token");
  return std::make_shared<TokenStore>(std::move(base), std::move(prefix), token);
}

}  // namespace eplb
