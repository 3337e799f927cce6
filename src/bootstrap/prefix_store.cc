// A view of a store with every key under a prefix.
#include "eplb/bootstrap.h"
#include "eplb/error.h"

namespace eplb {
namespace {

class PrefixStore final : public Store {
 public:
  PrefixStore(std::shared_ptr<Store> base, std::string prefix)
      : base_(std::move(base)), prefix_(std::move(prefix)) {}
  // A view of the same store: its kind is the base's ("file", "redis").
  std::string_view kind() const override { return base_->kind(); }
  void Set(const std::string& key, std::span<const uint8_t> value) override {
    base_->Set(prefix_ + key, value);
  }
  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    return base_->Get(prefix_ + key, deadline);
  }
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    return base_->SetIfAbsent(prefix_ + key, value);
  }
  // A view of the run's store keeps the run's token.
  std::optional<std::array<uint8_t, 32>> RunKey(std::string_view purpose) const override {
    return base_->RunKey(purpose);
  }

 private:
  std::shared_ptr<Store> base_;
  std::string prefix_;
};

}  // namespace

std::shared_ptr<Store> MakePrefixStore(std::shared_ptr<Store> base, std::string prefix) {
  if (!base) throw InvalidArgument("MakePrefixStore: no base store");
  return std::make_shared<PrefixStore>(std::move(base), std::move(prefix));
}

}  // namespace eplb
