// The table of built-in policies. Adding a policy: one file with its factory
// (declared in policies.h) and one row here.
#include <string>

#include "eplb/error.h"
#include "eplb/policy.h"
#include "policy/policies.h"

namespace eplb {
namespace {

struct PolicyEntry {
  const char* name;
  std::unique_ptr<Policy> (*make)();
};

constexpr PolicyEntry kPolicies[] = {
    {"deepseek", MakeDeepSeekPolicy},
    {"balanced", MakeBalancedPolicy},
    {"locality", MakeLocalityPolicy},
    {"movement", [] { return MakeMovementPolicy(); }},
};

}  // namespace

std::vector<std::string> PolicyNames() {
  std::vector<std::string> names;
  for (const auto& p : kPolicies) names.emplace_back(p.name);
  return names;
}

std::unique_ptr<Policy> MakePolicy(std::string_view name) {
  for (const auto& p : kPolicies)
    if (name == p.name) return p.make();
  std::string valid;
  for (const auto& p : kPolicies) valid += std::string(valid.empty() ? "" : ", ") + p.name;
  throw InvalidArgument("unknown policy '" + std::string(name) + "' (valid: " + valid + ")");
}

}  // namespace eplb
