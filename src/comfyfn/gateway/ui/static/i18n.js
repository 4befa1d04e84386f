// Interface texts in English and Chinese; the language comes from the browser unless chosen.
const TEXTS = {
  en: {
    skip: "Skip to content", language: "Language", signout: "Sign out",
    "tab.make": "Make", "tab.edit": "Edit", "tab.recipes": "Recipes", "tab.history": "History",
    "tab.workflows": "Workflows", sections: "Sections",
    "signin.title": "Sign in", "signin.key": "API key", "signin.go": "Sign in",
    "signin.hint": "Ask the gateway's operator for a key (comfyfn keys create NAME).",
    "signin.bad": "That key was refused: {message}", "signin.as": "Signed in as {name}",
    "make.title": "Make images", prompt: "Prompt", negative: "Negative prompt", preset: "Size",
    width: "Width", height: "Height", seed: "Seed", vary: "Vary", count: "Count",
    random: "random", "make.go": "Make", "preset.free": "Free size",
    "edit.title": "Edit an image", "edit.drop": "Drop, paste or choose an image",
    strength: "Strength", "edit.size": "Size", "edit.keep": "Keep the image's size",
    "edit.choose": "Choose", "edit.go": "Edit", "edit.none": "Choose an image first.",
    "edit.ready": "Image ready: {width} × {height}",
    "recipes.title": "Recipes", recipe: "Recipe", topics: "Topics, one per line",
    "recipe.file": "Or read topics from a TXT/CSV file", "recipe.go": "Run",
    zip: "Download all (ZIP)", "recipe.queued": "{count} images queued",
    "recipe.per": "{count} images per topic",
    "history.title": "History", state: "State", "state.all": "All",
    "state.succeeded": "Succeeded", "state.failed": "Failed", "state.running": "Running",
    "state.queued": "Queued", "state.cancelled": "Cancelled", filter: "Filter",
    refresh: "Refresh", more: "Load more", "history.empty": "No jobs yet.",
    "workflows.title": "Workflows", workflow: "Workflow", run: "Run",
    download: "Download", same: "Same seed again", like: "More like this", editthis: "Edit this",
    rerun: "Run again", cancel: "Cancel", preview: "Preview at step {step}",
    "job.queued": "Queued", "job.queued.at": "Queued ({position} ahead)",
    "job.running": "Running {percent}%", "job.succeeded": "Done", "job.failed": "Failed: {message}",
    "job.cancelled": "Cancelled", "job.lost": "Lost contact with the job; see History.",
    result: "Result {index}: {prompt}", zipping: "Packing {count} images…",
    "p.wechat": "WeChat", "p.weibo": "Weibo", "p.douyin": "Douyin", "p.xiaohongshu": "Xiaohongshu",
    "p.main": "E-commerce main", "p.detail": "E-commerce detail", "p.lifestyle": "E-commerce scene",
    "p.background": "Design background", "p.icon": "Icon", "p.decoration": "Decoration",
    "r.social": "Social media", "r.ecommerce": "E-commerce", "r.design": "Design",
  },
  zh: {
    skip: "跳到正文", language: "语言", signout: "退出",
    "tab.make": "生成", "tab.edit": "改图", "tab.recipes": "配方", "tab.history": "历史",
    "tab.workflows": "工作流", sections: "栏目",
    "signin.title": "登录", "signin.key": "API 密钥", "signin.go": "登录",
    "signin.hint": "向网关管理员索取密钥（comfyfn keys create 名称）。",
    "signin.bad": "密钥被拒绝：{message}", "signin.as": "已登录：{name}",
    "make.title": "生成图片", prompt: "提示词", negative: "反向提示词", preset: "尺寸",
    width: "宽", height: "高", seed: "种子", vary: "换一个", count: "张数",
    random: "随机", "make.go": "生成", "preset.free": "自定义尺寸",
    "edit.title": "修改图片", "edit.drop": "拖入、粘贴或选择一张图片",
    strength: "修改强度", "edit.size": "尺寸", "edit.keep": "保持原图尺寸",
    "edit.choose": "自定义", "edit.go": "修改", "edit.none": "请先选择一张图片。",
    "edit.ready": "图片已就绪：{width} × {height}",
    "recipes.title": "配方", recipe: "配方", topics: "主题，每行一个",
    "recipe.file": "或从 TXT/CSV 文件读取主题", "recipe.go": "开始",
    zip: "全部下载（ZIP）", "recipe.queued": "已排队 {count} 张",
    "recipe.per": "每个主题 {count} 张",
    "history.title": "历史记录", state: "状态", "state.all": "全部",
    "state.succeeded": "已完成", "state.failed": "失败", "state.running": "进行中",
    "state.queued": "排队中", "state.cancelled": "已取消", filter: "筛选",
    refresh: "刷新", more: "加载更多", "history.empty": "还没有任务。",
    "workflows.title": "工作流", workflow: "工作流", run: "运行",
    download: "下载", same: "同种子再来", like: "再来几张类似的", editthis: "修改这张",
    rerun: "再次运行", cancel: "取消", preview: "第 {step} 步预览",
    "job.queued": "排队中", "job.queued.at": "排队中（前面 {position} 个）",
    "job.running": "生成中 {percent}%", "job.succeeded": "完成", "job.failed": "失败：{message}",
    "job.cancelled": "已取消", "job.lost": "与任务的连接中断，请到历史记录查看。",
    result: "结果 {index}：{prompt}", zipping: "正在打包 {count} 张图片…",
    "p.wechat": "微信", "p.weibo": "微博", "p.douyin": "抖音", "p.xiaohongshu": "小红书",
    "p.main": "电商主图", "p.detail": "电商细节图", "p.lifestyle": "电商场景图",
    "p.background": "设计背景", "p.icon": "图标", "p.decoration": "装饰元素",
    "r.social": "社交媒体", "r.ecommerce": "电商", "r.design": "设计",
  },
};

const STORE_KEY = "comfyfn.lang";
let lang = pick();

function pick() {
  const chosen = localStorage.getItem(STORE_KEY);
  if (chosen && TEXTS[chosen]) return chosen;
  const wanted = navigator.languages || [navigator.language || "en"];
  return wanted.some((l) => l.toLowerCase().startsWith("zh")) ? "zh" : "en";
}

export function language() {
  return lang;
}

/** The text for `key` in the current language, with {name} replaced from `vars`. */
export function t(key, vars = {}) {
  const text = TEXTS[lang][key] ?? TEXTS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** `key` if there is a text for it, else `fallback`. */
export function tOr(key, fallback) {
  return key in TEXTS[lang] ? t(key) : fallback;
}

export function apply(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  document.querySelector("#tabs").setAttribute("aria-label", t("sections"));
  for (const el of root.querySelectorAll("input[name=seed]")) el.placeholder = t("random");
}

export function choose(next) {
  if (!TEXTS[next]) return;
  lang = next;
  localStorage.setItem(STORE_KEY, next);
  apply();
}
