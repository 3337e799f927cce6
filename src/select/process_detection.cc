// The public detections (eplb/detect.h, eplb/selection.h): the searches of
// select/detection.h pointed where this process's environment says.
#include "eplb/detect.h"
#include "eplb/selection.h"
#include "select/detection.h"

namespace eplb {

NixlDetection DetectNixl(std::optional<Platform> forced) {
  return DetectNixl(SearchEnvironment::FromProcess(), forced);
}

SelectionFacts SelectionFacts::Detect() {
  return DetectSelectionFacts(SearchEnvironment::FromProcess());
}

}  // namespace eplb
