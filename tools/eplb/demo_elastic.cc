#include "demo_elastic.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "demo/fingerprint.h"
#include "eplb/error.h"

namespace eplb::cli::demo {

namespace {

const char* kReachedKey = "demo/elastic/reached";
const char* kEventKey = "demo/elastic/event";

// A record the job's own processes wrote; still read as untrusted text:
// bounded, every field checked.
nlohmann::json ParseRecord(const std::string& text, const char* what, int me) {
  if (text.size() > 4096) throw Error("demo", "elastic", fmt::format("{} record of {} bytes", what, text.size()), me);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer())
    throw Error("demo", "elastic", fmt::format("malformed {} record: {}", what, text.substr(0, 200)), me);
  return j;
}

}  // namespace

ElasticEvent ElasticEvent::From(const DemoOptions& o) {
  ElasticEvent e;
  if (o.kill_rank >= 0) {
    e.kind = Kind::kKill;
    e.rank = o.kill_rank;
    e.at = o.kill_at;
  } else if (o.leave_rank >= 0) {
    e.kind = Kind::kLeave;
    e.rank = o.leave_rank;
    e.at = o.leave_at;
  } else if (o.join_at >= 0) {
    e.kind = Kind::kJoin;
    e.rank = o.ranks;  // the next process rank
    e.at = o.join_at;
  }
  return e;
}

const char* ElasticEvent::name() const {
  switch (kind) {
    case Kind::kKill: return "kill";
    case Kind::kLeave: return "leave";
    case Kind::kJoin: return "join";
    case Kind::kNone: break;
  }
  return "none";
}

int64_t SteadyNs(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

void AnnounceReached(Store& store, int64_t step) {
  store.SetString(kReachedKey, nlohmann::json{{"step", step}}.dump());
}

std::optional<int64_t> PollReached(Store& store) {
  std::string text;
  try {
    text = store.GetString(kReachedKey, Clock::now());
  } catch (const TimeoutError&) {
    return std::nullopt;
  }
  return ParseRecord(text, "the announced step's", -1)["step"].get<int64_t>();
}

void RecordEvent(Store& store, int64_t step, Clock::time_point when) {
  store.SetString(kEventKey, nlohmann::json{{"step", step}, {"when_ns", SteadyNs(when)}}.dump());
}

EventRecord WaitEvent(Store& store, int me, Deadline deadline) {
  std::string text;
  try {
    text = store.GetString(kEventKey, deadline);
  } catch (const TimeoutError&) {
    throw TimeoutError("demo", "waiting for the launcher's record of the membership event",
                       "the launcher did not say which rank it stopped", me, -1);
  }
  const nlohmann::json j = ParseRecord(text, "the launcher's event", me);
  if (!j.contains("when_ns") || !j["when_ns"].is_number_integer())
    throw Error("demo", "elastic", "the launcher's event record has no time", me);
  return EventRecord{j["step"].get<int64_t>(), j["when_ns"].get<int64_t>()};
}

MembershipChangeOptions DemoChangeOptions(const DemoOptions& o, int capacity, int slots_per_rank,
                                          const SelectionRequest& communicator, std::chrono::milliseconds deadline) {
  MembershipChangeOptions mo;
  mo.name = "demo/elastic";
  mo.policy = o.policy;
  mo.capacity = capacity;
  mo.slots_per_rank = slots_per_rank;
  mo.num_groups = o.groups;
  mo.communicator = communicator;
  mo.deadline = deadline;
  return mo;
}

WeightSource FingerprintSource() {
  return [](int l, int e, int t, const MemoryRegion& dst) {
    runtime::FillFingerprint(static_cast<uint8_t*>(dst.base), dst.bytes, l, e, t);
  };
}

nlohmann::json DescribeChange(const ElasticEvent& event, int64_t step, const MembershipChangeResult& r,
                              double before_event) {
  return nlohmann::json{{"event", event.name()},
                        {"rank", event.rank},
                        {"at_step", event.at},
                        {"changed_at_step", step},
                        {"generation", r.after.generation},
                        {"members", r.after.ranks},
                        {"lost", r.lost},
                        {"experts_from_source", r.experts_from_source},
                        {"bytes_from_source", r.bytes_from_source},
                        {"experts_over_wire", r.experts_over_wire},
                        {"bytes_over_wire", r.bytes_over_wire},
                        {"balancedness_before_event", before_event},
                        {"balancedness_live_slots_before_change", r.balancedness_before},
                        {"balancedness_after_change", r.balancedness_after},
                        {"change_seconds", r.seconds},
                        {"communicator", r.communicator}};
}

}  // namespace eplb::cli::demo
