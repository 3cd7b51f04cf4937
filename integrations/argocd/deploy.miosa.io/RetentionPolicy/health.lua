-- Argo CD health of a deploy.miosa.io RetentionPolicy (docs/gitops.md, "Health").
-- A policy is configuration the collector applies on its sweeps: Healthy as it stands.
-- Where the operator reports on it with the kstatus conditions (Ready, Reconciling,
-- Stalled), those decide, as for the other kinds.
local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c)
  local reason = tostring(c.reason or c.type)
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. tostring(c.message)
  end
  return reason
end

local hs = {}
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted"
  return hs
end
if obj.status ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
elseif ready ~= nil and not is_true(ready) then
  hs.status = "Progressing"
  hs.message = describe(ready)
else
  hs.status = "Healthy"
  if obj.status ~= nil and obj.status.lastSweepAt ~= nil then
    hs.message = "Last applied at " .. obj.status.lastSweepAt
  else
    hs.message = "Applies from the collector's next sweep"
  end
end
return hs
