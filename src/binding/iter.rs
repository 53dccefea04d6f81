//! The async-iterator shape shared by every stream class: `next()` resolves an [`step`] object, `return()` ends
//! the stream, and the class is its own `[Symbol.asyncIterator]` ([`async_iterator!`]). Plain classes rather
//! than napi's `async_iterator`, so that stream errors carry the SDK's codes.

use napi::bindgen_prelude::*;
use napi::Env;

/// `{ done: false, value }` for `Some(value)`, `{ done: true, value: undefined }` for `None`.
pub fn step<V: ToNapiValue>(env: &Env, value: Option<V>) -> Result<ObjectRef<false>> {
    let mut step = Object::new(env)?;
    step.set_named_property("done", value.is_none())?;
    match value {
        Some(v) => step.set_named_property("value", v)?,
        None => step.set_named_property("value", ())?,
    }
    step.create_ref::<false>()
}

/// `return()` and `[Symbol.asyncIterator]()` for a stream class with an inherent
/// `fn on_return(&self, env: &Env) -> impl Future<Output = ()> + Send + 'static` (run on `break`; what must happen on
/// the JS thread happens before it returns). Takes `return()`'s doc and the TypeScript of its promise and of
/// the iterator.
macro_rules! async_iterator {
    ($class:ident, $return_doc:tt, $step_ts:tt, $iter_ts:tt) => {
        #[napi]
        impl $class {
            #[doc = $return_doc]
            #[napi(catch_unwind, js_name = "return", ts_return_type = $step_ts)]
            pub fn return_(
                &self,
                env: napi::Env,
            ) -> napi::Result<$crate::binding::call::Promise<napi::bindgen_prelude::ObjectRef<false>>>
            {
                let end = self.on_return(&env);
                $crate::binding::call::settle(
                    &env,
                    None,
                    async move {
                        end.await;
                        Ok(())
                    },
                    |env, ()| $crate::binding::iter::step(env, None::<()>),
                )
            }

            /// The stream is its own async iterator.
            #[napi(catch_unwind, well_known_symbol = "asyncIterator", ts_return_type = $iter_ts)]
            pub fn iterator<'a>(
                &self,
                this: napi::bindgen_prelude::This<'a>,
            ) -> napi::bindgen_prelude::Object<'a> {
                this.object
            }
        }
    };
}
pub(crate) use async_iterator;
